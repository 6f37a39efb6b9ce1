"""Training objectives of the transformer stage, as registered components (``objective=`` in ``varkit train``).

* ``next_scale_ce`` — VAR's next-scale cross-entropy (Tian et al., NeurIPS 2024, Sec. 3.2), the default;
* ``cca`` — condition contrastive alignment (Chen et al., ICLR 2025), a post-training objective for sampling
  without classifier-free guidance; it needs a frozen reference model.

A plugin adds one with ``@OBJECTIVES.register("name")`` on an :class:`Objective` subclass and a
``conf/objective/<name>.yaml``. Importing this package registers the built-ins.
"""

from varkit.objectives.base import Forward, Objective, ObjectiveBatch, ObjectiveOutput, sequence_log_likelihood
from varkit.objectives.cca import ConditionContrastiveAlignment
from varkit.objectives.next_scale_ce import NextScaleCrossEntropy

__all__ = [
    "ConditionContrastiveAlignment",
    "Forward",
    "NextScaleCrossEntropy",
    "Objective",
    "ObjectiveBatch",
    "ObjectiveOutput",
    "sequence_log_likelihood",
]
