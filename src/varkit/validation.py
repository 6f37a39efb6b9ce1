"""Up-front checks of user-facing values: types and ranges of every number and option, devices, output folders.

One place per concept, run when a config is composed (``varkit config``, ``--cfg job``, and before every Hydra
command's job, from :func:`varkit.config.validate_components`) — so a string where a number belongs, a zero batch
size, a negative learning rate or an unwritable checkpoint folder is one sentence naming the key, the value and
what is allowed, before any model, tokenizer or data is built (the paper's recipes, Sec. 4 of VAR, run for hours:
a mistake found at the first checkpoint costs the whole run).

Rules apply to whichever keys a config has (``train_var``, ``train_tokenizer``, ``sample``, ``edit``, ``eval``);
plain data in, :class:`~varkit.errors.ConfigError` out. No OmegaConf here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from varkit.errors import ConfigError

__all__ = [
    "NUMBER_RULES",
    "check_device",
    "check_numbers",
    "check_output_dir",
    "validate_runtime",
    "validate_values",
]

_MISSING = object()


@dataclass(frozen=True)
class Number:
    """An allowed number: ``integer`` or any real, within ``[low, high]`` (``low_open``/``high_open`` exclude the
    bound), ``null`` when ``nullable``, plus ``extra`` single allowed values (e.g. ``-1`` for "no limit")."""

    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    extra: tuple[float, ...] = ()

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{kind} in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {_fmt(self.low)}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {_fmt(self.high)}"
        else:
            text = kind
        for value in self.extra:
            text += f" or {_fmt(value)}"
        return ("null or " if self.nullable else "") + text

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if value in self.extra:
            return True
        if self.integer and not isinstance(value, int):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


POSITIVE_INT = Number(integer=True, low=1)
NON_NEGATIVE_INT = Number(integer=True, low=0)
POSITIVE = Number(low=0, low_open=True)
NON_NEGATIVE = Number(low=0)
FRACTION = Number(low=0, high=1)
PROBABILITY_OPEN = Number(low=0, high=1, high_open=True)

#: dotted key -> the numbers it allows (checked only where a config has the key)
NUMBER_RULES: dict[str, Number] = {
    "seed": Number(integer=True),
    # data (both stages)
    "data.batch_size": POSITIVE_INT,
    "data.val_batch_size": Number(integer=True, low=1, nullable=True),
    "data.num_workers": NON_NEGATIVE_INT,
    "data.shuffle_buffer": NON_NEGATIVE_INT,
    "data.epoch_samples": Number(integer=True, low=1, nullable=True),
    "data.image_size": POSITIVE_INT,
    "data.mid_reso": Number(low=1),
    "data.max_skipped_fraction": Number(low=0, high=1, nullable=True),
    # optimisation
    "optim.lr": Number(low=0, low_open=True, nullable=True),
    "optim.base_lr": POSITIVE,
    "optim.discriminator_lr": Number(low=0, low_open=True, nullable=True),
    "optim.reference_batch": POSITIVE_INT,
    "optim.batch_size": Number(integer=True, low=1, nullable=True),
    "optim.weight_decay": NON_NEGATIVE,
    "optim.weight_decay_end": Number(low=0, nullable=True),
    "optim.eps": POSITIVE,
    "optim.grad_clip": Number(nullable=True),
    "optim.total_steps": Number(integer=True, low=1, nullable=True),
    "optim.warmup_steps": Number(integer=True, low=0, nullable=True),
    "optim.warmup_fraction": FRACTION,
    "optim.warmup_start": FRACTION,
    "optim.final_ratio": FRACTION,
    "optim.min_lr_ratio": FRACTION,
    "loss.label_smoothing": PROBABILITY_OPEN,
    "progressive.fraction": FRACTION,
    "progressive.start_scale": POSITIVE_INT,
    "progressive.scale_warmup_steps": NON_NEGATIVE_INT,
    # transformer
    "model.num_classes": POSITIVE_INT,
    "model.depth": POSITIVE_INT,
    "model.width": POSITIVE_INT,
    "model.num_heads": POSITIVE_INT,
    "model.mlp_ratio": POSITIVE,
    "model.drop_path": PROBABILITY_OPEN,
    "model.class_dropout": FRACTION,
    "model.dropout": PROBABILITY_OPEN,
    "model.attention_dropout": PROBABILITY_OPEN,
    "model.codebook_size": Number(integer=True, low=1, nullable=True),
    "model.code_dim": Number(integer=True, low=1, nullable=True),
    "model.norm_eps": POSITIVE,
    # tokenizer
    "tokenizer.image_size": POSITIVE_INT,
    "tokenizer.base_channels": POSITIVE_INT,
    "tokenizer.encoder_blocks": POSITIVE_INT,
    "tokenizer.decoder_blocks": POSITIVE_INT,
    "tokenizer.latent_channels": POSITIVE_INT,
    "tokenizer.codebook_size": POSITIVE_INT,
    "tokenizer.dropout": PROBABILITY_OPEN,
    "quantizer.codebook_size": Number(integer=True, low=1, nullable=True),
    "quantizer.code_dim": Number(integer=True, low=1, nullable=True),
    "quantizer.beta": NON_NEGATIVE,
    "gan.weight": NON_NEGATIVE,
    "gan.start_step": NON_NEGATIVE_INT,
    "codebook.usage_window": POSITIVE_INT,
    "codebook.restart_every": POSITIVE_INT,
    "codebook.pool_batches": POSITIVE_INT,
    # trainer
    "trainer.max_steps": Number(integer=True, low=1, extra=(-1,)),
    "trainer.log_every_n_steps": POSITIVE_INT,
    "trainer.accumulate_grad_batches": POSITIVE_INT,
    "trainer.num_nodes": POSITIVE_INT,
    "trainer.limit_val_batches": Number(low=0, nullable=True),
    "trainer.val_check_interval": Number(low=0, low_open=True, nullable=True),
    "callbacks.model_checkpoint.every_n_train_steps": Number(integer=True, low=0, nullable=True),
    "callbacks.ema.decay": FRACTION,
    # sample / edit / eval (the sampling options proper are validated by the sampling spec where it exists)
    "batch_size": POSITIVE_INT,
    "per_class": POSITIVE_INT,
    "samples": POSITIVE_INT,
    "upscale": POSITIVE_INT,
    # the old top-level sampling keys: null unless typed (then rewritten to ``sampling.<key>``)
    "cfg": dataclasses.replace(NON_NEGATIVE, nullable=True),
    "top_k": dataclasses.replace(NON_NEGATIVE_INT, nullable=True),
    "top_p": dataclasses.replace(FRACTION, nullable=True),
    "temperature": dataclasses.replace(POSITIVE, nullable=True),
    "generate.per_class": POSITIVE_INT,
    "generate.batch_size": POSITIVE_INT,
    "samples.limit": Number(integer=True, low=1, nullable=True),
    "sampling.cfg": NON_NEGATIVE,
    "sampling.top_k": NON_NEGATIVE_INT,
    "sampling.top_p": FRACTION,
    "sampling.temperature": POSITIVE,
}

#: boolean keys that may also be null (the old top-level ``smooth``, rewritten to ``sampling.smooth`` when typed)
NULLABLE_BOOL_KEYS: tuple[str, ...] = ("smooth",)

#: keys that take ``true``/``false`` (a typo such as ``maybe`` would otherwise count as true)
BOOL_KEYS: tuple[str, ...] = (
    "resume",
    "data.hflip",
    "data.drop_last",
    "data.resampled",
    "data.pin_memory",
    "data.per_scale",
    "export.ema",
    "gan.enabled",
    "gan.adaptive_weight",
    "codebook.restart",
    "smooth",
    "sampling.smooth",
    "pngs",
    "grid",
    "npz",
    "progress",
    "trainer.enable_progress_bar",
    "trainer.deterministic",
)

#: precision names Lightning accepts
PRECISIONS: tuple[str, ...] = (
    "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed",
    "transformer-engine", "transformer-engine-float16",
)  # fmt: skip

#: keys naming folders a run writes into (checked for being writable directories before any work)
OUTPUT_DIR_KEYS: tuple[str, ...] = (
    "paths.output_dir",
    "callbacks.model_checkpoint.dirpath",
    "export.dir",
    "output",
)


#: keys naming inputs that must exist when given (``null``: not used)
INPUT_KEYS: dict[str, str] = {
    "model_dir": "dir",
    "tokenizer_dir": "dir",
    "source": "file",
    "mask": "file",
    "checkpoint.var": "dir",
    "checkpoint.vqvae": "dir",
    "export.classes": "classes",  # a classes.json, or a folder holding one
    "samples.path": "any",
    "loss.vgg_weights": "file",
    "loss.lpips_weights": "file",
}


def check_input(key: str, value: Any, kind: str) -> None:
    """An input path given in ``key`` exists (a ``dir`` or a ``file``)."""
    if not isinstance(value, (str, Path)) or "://" in str(value):
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}={str(value)!r} does not exist")
    if kind == "dir" and not path.is_dir():
        raise ConfigError(f"{key}={str(value)!r} is a file; expected a directory")
    if kind == "file" and not path.is_file():
        raise ConfigError(f"{key}={str(value)!r} is a directory; expected a file")
    if kind == "classes" and not (path.is_file() or (path / "classes.json").is_file()):
        raise ConfigError(f"{key}={str(value)!r} is a folder without a classes.json; expected that file or its folder")


def _lookup(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def check_numbers(cfg: Mapping[str, Any], rules: Mapping[str, Number] = NUMBER_RULES) -> None:
    """Every ``rules`` key present in ``cfg`` holds an allowed value (type and range)."""
    for key, rule in rules.items():
        value = _lookup(cfg, key)
        if value is _MISSING or rule.allows(value):
            continue
        if isinstance(value, Mapping):  # a group, e.g. ``samples:`` of eval vs ``samples: 4`` of edit
            continue
        raise ConfigError(f"{key}={value!r} is not allowed: expected {rule.describe()}")
    for key in BOOL_KEYS:
        value = _lookup(cfg, key)
        if key in NULLABLE_BOOL_KEYS and value is None:
            continue
        if value is not _MISSING and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not allowed: expected true or false")
    _check_options(cfg)
    width, heads = _lookup(cfg, "model.width"), _lookup(cfg, "model.num_heads")
    if isinstance(width, int) and isinstance(heads, int) and heads > 0 and width % heads:
        raise ConfigError(f"model.num_heads={heads} does not divide model.width={width}: pick a divisor of the width")


def _check_options(cfg: Mapping[str, Any]) -> None:
    """Options with a fixed set of values, and the trainer's devices/precision/strategy (Lightning would refuse
    them only once the Trainer is built)."""
    schedule = _lookup(cfg, "optim.schedule")
    if schedule is not _MISSING:
        from varkit.training.optim import LR_SCHEDULES

        if schedule not in LR_SCHEDULES:
            raise ConfigError(f"optim.schedule={schedule!r} is not allowed: expected one of {', '.join(LR_SCHEDULES)}")
    betas = _lookup(cfg, "optim.betas")
    if betas is not _MISSING and not (
        isinstance(betas, (list, tuple)) and len(betas) == 2 and all(PROBABILITY_OPEN.allows(b) for b in betas)
    ):
        raise ConfigError(f"optim.betas={betas!r} is not allowed: expected two numbers in [0, 1), e.g. [0.9, 0.95]")
    devices = _lookup(cfg, "trainer.devices")
    if devices is not _MISSING and not (
        devices == "auto"
        or (isinstance(devices, int) and not isinstance(devices, bool) and (devices >= 1 or devices == -1))
        or (isinstance(devices, list) and devices and all(isinstance(d, int) and d >= 0 for d in devices))
        or (isinstance(devices, str) and devices.replace(",", "").strip().isdigit())
    ):
        raise ConfigError(
            f"trainer.devices={devices!r} is not allowed: expected auto, a count >= 1 (-1: all) or a list of indices"
        )
    precision = _lookup(cfg, "trainer.precision")
    if precision is not _MISSING and precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not allowed: expected one of {', '.join(PRECISIONS)}")
    strategy = _lookup(cfg, "trainer.strategy")
    if isinstance(strategy, str) and strategy != "auto":
        from lightning.pytorch.strategies import StrategyRegistry

        if strategy not in StrategyRegistry:
            raise ConfigError(
                f"trainer.strategy={strategy!r} is not allowed: expected auto, one of Lightning's strategy names "
                f"(e.g. ddp, ddp_spawn, fsdp, deepspeed) or a _target_ node"
            )


def check_device(key: str, device: Any) -> None:
    """``device``/``trainer.accelerator`` naming an accelerator this machine does not have is one sentence."""
    if not isinstance(device, str):
        raise ConfigError(f"{key}={device!r} is not allowed: expected auto, cpu, cuda or cuda:<index>")
    name = device.strip().lower()
    if name in ("auto", "cpu", "mps", "tpu", "hpu", "xla"):
        return
    if name in ("gpu", "cuda") or name.startswith("cuda:"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={device!r} but this machine has no CUDA GPU: use {key}=cpu (or auto)")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ConfigError(f"{key}={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return
    raise ConfigError(f"{key}={device!r} is not allowed: expected auto, cpu, cuda or cuda:<index>")


def check_output_dir(key: str, value: Any) -> None:
    """``value`` is (or can become) a writable directory: not a file, no file on its way, writable parent."""
    if not isinstance(value, (str, Path)) or not str(value) or "???" in str(value) or "://" in str(value):
        return
    path = Path(value).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise ConfigError(f"{key}={str(value)!r} {where}; give a directory")
    try:  # os.access lies for root and on read-only mounts: try it
        handle, name = tempfile.mkstemp(prefix=".varkit-write-check-", dir=probe)
        os.close(handle)
        os.unlink(name)
    except OSError as err:
        raise ConfigError(f"{key}={str(value)!r} is not writable ({probe}: {err.strerror})") from None


def _check_token_shards_tokenizer(cfg: Mapping[str, Any], tokenizer_path: str) -> None:
    """Token shards whose ``tokens.json`` names the tokenizer that wrote them must name this one (the scales and
    vocabulary are compared again, with the loaded tokenizer, when training is built)."""
    from varkit.checkpoint.tokenizer_source import weights_digest
    from varkit.data.shards import expand_urls
    from varkit.data.tokens import read_token_info

    data = _lookup(cfg, "data")
    if not isinstance(data, Mapping) or not str(data.get("_target_", "")).endswith("TokenDataModule"):
        return
    info = data.get("token_info")
    if not isinstance(info, Mapping):
        urls = data.get("train_urls") or data.get("val_urls")
        if info is None and urls:
            local = [u for u in expand_urls(urls) if "://" not in u and not u.startswith("pipe:")]
            if not local:
                return
            info = read_token_info(Path(local[0]).parent)
        elif isinstance(info, str):
            info = read_token_info(info)
        else:
            return
    written_by = (info.get("tokenizer") or {}).get("weights_sha256")
    if written_by and written_by != weights_digest(tokenizer_path):
        raise ConfigError(
            f"the token shards of data.train_urls were written by another tokenizer (weights {written_by[:12]}…) than "
            f"tokenizer.path={tokenizer_path!r}: re-run `varkit data tokenize` with it, or point tokenizer.path at the "
            "tokenizer that wrote them"
        )


def validate_values(cfg: Mapping[str, Any]) -> None:
    """The static checks of a resolved plain config: types and ranges (also for ``varkit config``)."""
    check_numbers(cfg)


def validate_runtime(cfg: Mapping[str, Any]) -> None:
    """The checks of a config about to run on this machine: its devices exist, its output folders are writable."""
    for key in ("device", "trainer.accelerator"):
        value = _lookup(cfg, key)
        if value is not _MISSING:
            check_device(key, value)
    for key in OUTPUT_DIR_KEYS:
        value = _lookup(cfg, key)
        if value is not _MISSING:
            check_output_dir(key, value)
    for key, kind in INPUT_KEYS.items():
        value = _lookup(cfg, key)
        if value is not _MISSING and not isinstance(value, Mapping):
            check_input(key, value, kind)
    tokenizer_path = _lookup(cfg, "tokenizer.path")  # the transformer stage's frozen tokenizer
    if isinstance(tokenizer_path, str):
        from varkit.checkpoint.tokenizer_source import resolve_tokenizer_dir

        try:
            resolve_tokenizer_dir(tokenizer_path)
        except ValueError as err:
            raise ConfigError(f"tokenizer.path={tokenizer_path!r}: {err}") from None
        _check_token_shards_tokenizer(cfg, tokenizer_path)
    for key in ("data.train_urls", "data.val_urls"):
        value = _lookup(cfg, key)
        if value is not _MISSING and value is not None:
            from varkit.data.shards import expand_urls

            try:
                expand_urls(value)
            except ConfigError:
                raise
            except ValueError as err:  # DataSetupError: the sentence names the shard or pattern
                raise ConfigError(f"{key}: {err}") from None
