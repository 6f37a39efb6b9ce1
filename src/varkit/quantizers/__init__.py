"""Multi-scale quantizers (VAR paper, Sec. 3.3); importing this package registers them in ``QUANTIZERS``.

* ``msvq`` — :class:`MultiScaleVQ`, VAR's multi-scale residual VQ (loads the released VQVAE weights);
* ``msfsq`` — :class:`MultiScaleFSQ`, the same residual scheme with finite scalar quantization.
"""

from varkit.quantizers.msfsq import MultiScaleFSQ
from varkit.quantizers.msvq import MultiScaleVQ
from varkit.quantizers.phi import PhiConv, ResidualPhi
from varkit.quantizers.residual import MultiScaleResidualQuantizer

__all__ = ["MultiScaleFSQ", "MultiScaleResidualQuantizer", "MultiScaleVQ", "PhiConv", "ResidualPhi"]
