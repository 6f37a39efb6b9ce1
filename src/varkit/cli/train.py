"""``varkit train``: train the VAR transformer over a frozen tokenizer (VAR paper, Sec. 3.2 and Sec. 4).

Examples::

    varkit train                                          # the CPU demo (token shards of the demo tokenizer)
    varkit train data=demo_images                         # tokenize image shards on the fly instead
    varkit train model=var_d16 tokenizer.path=weights/vqvae data=... trainer=gpu logger=wandb
    varkit train trainer=ddp_cpu trainer.max_steps=10     # 2 CPU processes (gloo)

Fine-tuning: ``init_from=DIR`` starts from the weights of a ``varkit convert`` output or an earlier export
(:mod:`varkit.checkpoint.init`: strict, class rows remapped to the dataset's ``classes.json``), ``finetune.*``
chooses what trains (frozen blocks/embeddings, LoRA). A LoRA fine-tune is merged into plain weights on export.

The run directory is ``runs/<name>``: re-running the same command resumes from ``checkpoints/last.ckpt`` (step,
optimiser, LR schedule, EMA, data-stream position and RNG states). At the end the transformer (EMA weights when
the EMA callback is on) and a reference to its tokenizer are exported to ``runs/<name>/model/`` for
``varkit sample``.
"""

from __future__ import annotations

import contextlib
import copy
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


def will_resume(cfg: DictConfig) -> bool:
    """Whether this run continues from its own ``checkpoints/last*.ckpt``."""
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    return bool(cfg.get("resume", True)) and any(checkpoints.glob("last*.ckpt"))


def dataset_classes(cfg: DictConfig, datamodule: Any) -> list[str] | None:
    """The training data's class names: ``export.classes``, else a ``classes.json`` beside the training shards."""
    from varkit.data.shards import read_classes

    classes_file = cfg.export.get("classes")
    return read_classes(classes_file) if classes_file else find_classes(getattr(datamodule, "train_urls", None))


def initializer(cfg: DictConfig, classes: list[str] | None) -> Any:
    """The ``initialize`` callable for :class:`VARModule`: ``init_from`` with the class remap, report saved."""
    from varkit.checkpoint.init import initialize_from

    source = cfg.get("init_from")
    finetune = cfg.get("finetune") or {}
    report_path = Path(cfg.paths.output_dir) / "init_report.json"

    def initialize(model: Any) -> None:
        report = initialize_from(
            model,
            str(source),
            strict=bool(finetune.get("strict", True)),
            classes=classes,
            class_map=finetune.get("class_map"),
        )
        report.write(report_path)
        logger.info("initialisation report: %s", report_path)

    return initialize


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
    finetune = cfg.get("finetune") or {}
    architecture = finetune.get("architecture", "config")
    if architecture not in ("config", "init_from"):
        raise ConfigError(f"finetune.architecture={architecture!r} is not allowed: expected config or init_from")
    if init_from and architecture == "init_from":
        from varkit.checkpoint.starting import starting_arguments

        arguments = starting_arguments(init_from, arguments)  # the architecture of the starting model
    datamodule = safe_instantiate(cfg.data)
    token_info = getattr(datamodule, "token_info", None)  # token shards: written by this very tokenizer?
    if token_info is not None:
        from varkit.checkpoint.tokenizer_source import check_token_info

        check_token_info(token_info, tokenizer, tokenizer_dir)
    plain = to_plain(cfg)
    # the class embedding follows the data's classes.json (export.classes or beside the shards) when there is one
    classes = dataset_classes(cfg, datamodule)
    if classes is not None and len(classes) != int(arguments.get("num_classes", len(classes))):
        logger.info("model.num_classes=%s set to the data's %d classes", arguments["num_classes"], len(classes))
    if classes is not None:
        arguments["num_classes"] = len(classes)
    initialize = None
    if cfg.get("init_from"):
        if will_resume(cfg):
            logger.info("init_from=%s ignored: resuming this run from its own last.ckpt", cfg.init_from)
        else:
            initialize = initializer(cfg, classes)
    if plain.get("finetune", {}).get("lora", {}).get("rank", 0) and "fsdp" in str(cfg.trainer.get("strategy", "")):
        raise ConfigError("finetune.lora is not supported with FSDP (trainer=fsdp); use ddp or a single device")
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
        finetune=plain.get("finetune"),
        initialize=initialize,
        objective=objective,
    )
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
    from varkit.training.finetune import has_lora, merge_lora

    state = full_state_dict(module.model)
    ema = find_ema(trainer) if cfg.export.get("ema", True) else None
    if ema is not None and ema.shadow:
        state.update(ema.full_shadow())
    if has_lora(module.model):
        # fold the adapters (EMA-averaged A and B when EMA is on) into plain weights: `varkit sample` needs no peft
        holder = copy.deepcopy(module.model).cpu()
        holder.load_state_dict({k: v.cpu() for k, v in state.items()}, strict=True)
        state = merge_lora(holder).state_dict()
    return {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state.items()}


def export_model(
    module: Any, trainer: Any, cfg: DictConfig, datamodule: Any, state: Mapping[str, Any] | None = None
) -> Path:
    """Write the trained transformer (EMA weights if configured) + tokenizer reference to ``export.dir``.

    ``state``: from :func:`export_state` (needed when the model is sharded; computed here otherwise).
    """
    from varkit.checkpoint.generator import write_generator
    from varkit.lit.var_callbacks import find_ema
    from varkit.models.var import VAR

    if state is None:
        state = export_state(module, trainer, cfg)
    model = VAR.from_config(module.hparams["model"])  # a plain, unsharded copy to hold the whole weights
    model.load_state_dict(dict(state), strict=True)
    model = model.cpu().float().eval()
    ema = find_ema(trainer) if cfg.export.get("ema", True) else None
    classes = dataset_classes(cfg, datamodule)  # the new class names after a class-remapping fine-tune
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
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    resume = will_resume(cfg)
    module, datamodule, trainer = build_training(cfg)
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
