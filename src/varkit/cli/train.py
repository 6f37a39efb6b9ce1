"""``varkit train``: train the VAR transformer over a frozen tokenizer (VAR paper, Sec. 3.2 and Sec. 4).

Examples::

    varkit train                                          # the CPU demo (token shards of the demo tokenizer)
    varkit train data=demo_images                         # tokenize image shards on the fly instead
    varkit train model=var_d16 tokenizer.path=weights/vqvae data=... trainer=gpu logger=wandb
    varkit train trainer=ddp_cpu trainer.max_steps=10     # 2 CPU processes (gloo)

The run directory is ``runs/<name>``: re-running the same command resumes from ``checkpoints/last.ckpt`` (step,
optimiser, LR schedule, EMA, data-stream position and RNG states). At the end the transformer (EMA weights when
the EMA callback is on) and a reference to its tokenizer are exported to ``runs/<name>/model/`` for
``varkit sample``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

HELP = "train the VAR transformer on a frozen tokenizer's tokens (Lightning), then export it to <run>/model"
CONFIG_NAME = "train_var"

logger = logging.getLogger(__name__)


def find_classes(urls: Any) -> list[str] | None:
    """Class names from a ``classes.json`` beside the first shard or up to two folders above it."""
    from varkit.data.shards import expand_urls, read_classes

    try:
        first = Path(expand_urls(urls)[0])
    except (IndexError, TypeError, ValueError):
        return None
    for folder in (first.parent, first.parent.parent, first.parent.parent.parent):
        if (folder / "classes.json").is_file():
            return read_classes(folder)
    return None


def build_training(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """``(module, datamodule, trainer)`` from a composed ``train_var`` config (no training yet)."""
    import lightning as L
    import torch

    from varkit.checkpoint.tokenizer_source import load_tokenizer, resolve_tokenizer_dir
    from varkit.config import instantiate_group, safe_instantiate, to_plain
    from varkit.errors import ConfigError
    from varkit.lit.var_module import VARModule
    from varkit.models.factory import model_arguments
    from varkit.rng import mix_seed
    from varkit.tracking import build_loggers, log_run_info

    L.seed_everything(int(cfg.seed), workers=True)  # same initial weights on every rank
    tokenizer_dir = resolve_tokenizer_dir(cfg.tokenizer.path)
    tokenizer = load_tokenizer(tokenizer_dir)
    arguments = model_arguments(to_plain(cfg.model), tokenizer, to_plain(cfg.get("attention")))
    init_from = cfg.get("init_from")
    if init_from:
        from varkit.checkpoint.starting import starting_arguments

        arguments = starting_arguments(init_from, arguments)  # the architecture of the starting model
    datamodule = safe_instantiate(cfg.data)
    data_scales = getattr(datamodule, "scales", None)
    if data_scales is not None:
        try:
            data_scales = [tuple(s) for s in data_scales]
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read the token shards' tokens.json: {err}") from None
        if data_scales != [tuple(s) for s in tokenizer.scales.sizes]:
            raise ConfigError(
                f"the token shards were written with scales {data_scales}, but the tokenizer at {tokenizer_dir} "
                f"uses {[tuple(s) for s in tokenizer.scales.sizes]}: re-run `varkit data tokenize` with it"
            )
    plain = to_plain(cfg)
    objective = dict(plain.get("objective") or {"name": "next_scale_ce"})
    if init_from and "reference" in objective and not objective["reference"]:
        objective["reference"] = str(init_from)  # "the initial model" of a fine-tuning run: its starting weights
    module = VARModule(
        arguments,
        optim=plain["optim"],
        loss=plain["loss"],
        progressive=plain["progressive"],
        compile=plain["compile"],
        seed=int(cfg.seed),
        tokenizer=tokenizer,
        tokenizer_path=str(tokenizer_dir),
        objective=objective,
    )
    if init_from:
        from varkit.checkpoint.starting import load_starting_weights

        load_starting_weights(module.model, init_from)  # a resumed run then restores last.ckpt over them
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = build_loggers(cfg.get("logger"))  # W&B goes offline by itself without credentials
    trainer = safe_instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    torch.manual_seed(mix_seed(int(cfg.seed), trainer.global_rank))  # per-rank stream for drop path
    log_run_info(loggers, plain, world_size=trainer.world_size)
    return module, datamodule, trainer


def export_state(module: Any, trainer: Any, cfg: DictConfig) -> dict[str, Any]:
    """The transformer's whole float32 state to export (EMA weights if configured), on the CPU.

    Under FSDP2 the shards are gathered: a collective, so every rank calls it; only rank 0 receives the tensors.
    """
    from varkit.lit.fsdp import full_state_dict
    from varkit.lit.var_callbacks import find_ema

    state = full_state_dict(module.model)
    ema = find_ema(trainer) if cfg.export.get("ema", True) else None
    if ema is not None and ema.shadow:
        state.update(ema.full_shadow())
    return {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state.items()}


def export_model(
    module: Any, trainer: Any, cfg: DictConfig, datamodule: Any, state: Mapping[str, Any] | None = None
) -> Path:
    """Write the trained transformer (EMA weights if configured) + tokenizer reference to ``export.dir``.

    ``state``: from :func:`export_state` (needed when the model is sharded; computed here otherwise).
    """
    from varkit.checkpoint.generator import write_generator
    from varkit.data.shards import read_classes
    from varkit.lit.var_callbacks import find_ema
    from varkit.models.var import VAR

    if state is None:
        state = export_state(module, trainer, cfg)
    model = VAR.from_config(module.hparams["model"])  # a plain, unsharded copy to hold the whole weights
    model.load_state_dict(dict(state), strict=True)
    model = model.cpu().float().eval()
    ema = find_ema(trainer) if cfg.export.get("ema", True) else None
    classes_file = cfg.export.get("classes")
    classes = read_classes(classes_file) if classes_file else find_classes(getattr(datamodule, "train_urls", None))
    extra = {"ema": ema is not None, "global_step": int(trainer.global_step)}
    return write_generator(model, cfg.export.dir, module.hparams["tokenizer_path"], classes=classes, extra=extra)


@contextlib.contextmanager
def relaunchable_argv(command: str) -> Iterator[None]:
    """Make ``sys.argv`` re-run this command: Lightning's DDP launcher starts the other ranks with
    ``python -m varkit <sys.argv[1:]>``, and during a Hydra job ``sys.argv[1:]`` holds only the overrides."""
    import varkit

    saved = list(sys.argv)
    overrides = saved[2:] if len(saved) > 1 and saved[1] == command else saved[1:]
    # argv[0] serves when started from the `varkit` console script (no module spec): run varkit/__main__.py
    sys.argv = [str(Path(varkit.__file__).parent / "__main__.py"), command, *overrides]
    try:
        yield
    finally:
        sys.argv = saved


def run(cfg: DictConfig) -> None:
    module, datamodule, trainer = build_training(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    resume = bool(cfg.get("resume", True)) and any(checkpoints.glob("last*.ckpt"))
    if resume:
        logger.info("resuming from %s", checkpoints / "last.ckpt")
    from varkit.tracking import finish_wandb_runs

    try:
        with relaunchable_argv("train"):
            trainer.fit(module, datamodule=datamodule, ckpt_path="last" if resume else None)
    finally:
        finish_wandb_runs(trainer.loggers)
    if trainer.interrupted:
        return
    state = export_state(module, trainer, cfg)  # every rank: gathers the shards under FSDP2
    if trainer.is_global_zero:
        exported = export_model(module, trainer, cfg, datamodule, state)
        sys.stdout.write(f"transformer exported to {exported} (sample with: varkit sample model_dir={exported})\n")
