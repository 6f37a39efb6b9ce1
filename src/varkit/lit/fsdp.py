"""Fully sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``) for the transformer stage.

Lightning's ``strategy="fsdp"`` wraps modules with the first FSDP API and refuses CPUs; its
:class:`~lightning.pytorch.strategies.ModelParallelStrategy` instead hands the LightningModule a device mesh and
lets ``configure_model`` apply FSDP2 itself, on GPUs as on CPUs (gloo). varkit uses the latter for
``trainer=fsdp`` and ``trainer=fsdp_cpu``:

* :class:`FSDP2Strategy` — a ``ModelParallelStrategy`` whose default is pure data parallelism over every rank
  (Lightning's ``"auto"`` would put all GPUs of a node into a tensor-parallel group, and VAR has no
  tensor-parallel plan).
* :func:`shard_transformer` — ``fully_shard`` each block's adaLN projection, each block, then the root
  :class:`~varkit.models.var.VAR` (called from :meth:`VARModule.configure_model`).
* :func:`full_state_dict` / :func:`full_tensor` — unsharded weights for exports and EMA checkpoints.

Parameters of a sharded model are ``DTensor`` s holding this rank's shard; they are gathered only inside the
forward/backward of the unit that owns them.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import Tensor, nn

__all__ = [
    "FSDP2Strategy",
    "full_state_dict",
    "full_tensor",
    "is_sharded",
    "local_numel",
    "mixed_precision_policy",
    "reshard",
    "shard_transformer",
]

logger = logging.getLogger(__name__)


class FSDP2Strategy(ModelParallelStrategy):
    """:class:`ModelParallelStrategy` defaulting to FSDP2 over all ranks (no tensor parallelism).

    Args:
        data_parallel_size: ranks sharing the model's shards; ``"auto"``: every rank (``num_nodes * devices /
            tensor_parallel_size``).
        tensor_parallel_size: must stay 1 for VAR (see :meth:`VARModule.configure_model`).
        **kwargs: :class:`ModelParallelStrategy` arguments (``save_distributed_checkpoint``: ``True`` writes
            ``last.ckpt/`` as a folder of per-rank shards plus ``meta.pt``; ``False`` gathers one full file on
            rank 0).
    """

    def __init__(
        self, data_parallel_size: int | str = "auto", tensor_parallel_size: int | str = 1, **kwargs: Any
    ) -> None:
        super().__init__(data_parallel_size, tensor_parallel_size, **kwargs)  # type: ignore[arg-type]

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto" and self._tensor_parallel_size != "auto":
            world = self.num_nodes * self.num_processes
            tensor = int(self._tensor_parallel_size)
            if world % tensor:
                raise ValueError(f"tensor_parallel_size {tensor} does not divide the world size {world}")
            self._data_parallel_size = world // tensor
        super().setup_environment()

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Resume with ``weights_only=True`` always (distributed checkpoints bypass the CheckpointIO plugin)."""
        from varkit.lit.safe_io import safe_checkpoint_load

        return safe_checkpoint_load(super().load_checkpoint, checkpoint_path)


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` holds FSDP2-sharded (``DTensor``) parameters."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def reshard(module: nn.Module) -> None:
    """Free the gathered parameters of every FSDP2 unit in ``module``, so they are sharded ``DTensor`` s again.

    The root unit keeps its parameters gathered after a forward without backward (e.g. validation), as it expects
    the backward to follow; code that reads or writes parameters outside forward/backward (EMA, exports) calls
    this first so that it sees the shards. A no-op on unsharded modules.
    """
    from torch.distributed.fsdp import FSDPModule

    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()


def full_tensor(tensor: Tensor) -> Tensor:
    """The whole tensor: gathers a ``DTensor`` (a collective: every rank of its mesh must call it)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def local_numel(module: nn.Module) -> tuple[int, int]:
    """``(elements stored on this rank, elements of the whole model)`` over ``module``'s parameters."""
    from torch.distributed.tensor import DTensor

    reshard(module)
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in module.parameters())
    return local, sum(p.numel() for p in module.parameters())


def mixed_precision_policy(precision: str) -> Any:
    """FSDP2 mixed precision following the trainer's ``precision``.

    ``bf16-*``: gather parameters and compute in bfloat16 (half the all-gather traffic; the shards, the optimiser
    and the EMA stay float32 under ``bf16-mixed``) and reduce gradients in float32 so that averaging over many
    ranks loses no precision. Anything else: float32 throughout (the default policy).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if str(precision).startswith("bf16"):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_transformer(model: nn.Module, mesh: Any, precision: str) -> int:
    """Apply ``fully_shard`` to a :class:`VAR` over the 1-D data-parallel ``mesh``; returns the number of blocks.

    Each block is one communication unit (all-gathered for its forward and backward, then freed). A block's adaLN
    projection is a unit of its own because :meth:`VAR.block_modulations` calls it outside the block's forward.
    The root unit holds the embeddings and the head; ``generate`` is registered as a forward method so that
    sampling gathers them too. Idempotent: an already sharded model is left as it is.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

    if isinstance(model, FSDPModule):
        return len(model.blocks)  # type: ignore[arg-type]
    # AdaLNModulation returns a view of its projection (and a compiled VAR a view of its logits); FSDP2 warns that
    # an in-place op on such a view would skip the pre-backward all-gather. Blocks only unbind the modulation and
    # the loss only reads the logits (no in-place op), so the warning does not apply to these two units.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDP(AdaLNModulation|VAR)\) returned a view")
    policy = mixed_precision_policy(precision)
    blocks = list(model.blocks)  # type: ignore[arg-type]
    for block in blocks:
        fully_shard(block.adaln, mesh=mesh, mp_policy=policy)
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    register_fsdp_forward_method(model, "generate")
    return len(blocks)


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's whole state dict on the CPU.

    For a sharded model this is a collective (call it on every rank); only rank 0 receives the tensors, the
    others get ``{}`` (nothing is gathered to every rank at once).
    """
    if not is_sharded(model):
        return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    reshard(model)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return dict(get_model_state_dict(model, options=options))
