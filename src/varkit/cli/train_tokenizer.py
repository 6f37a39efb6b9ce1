"""``varkit train-tokenizer``: train the multi-scale VQVAE (VAR paper, Sec. 4), export it for the transformer stage.

Examples::

    varkit data demo data/demo
    varkit train-tokenizer                                  # the CPU demo: runs/tokenizer-demo
    varkit train-tokenizer experiment=tokenizer_demo_gan    # + patch discriminator
    varkit train-tokenizer tokenizer=vqvae_f16 schedule=var_256 data=... trainer=gpu --cfg job

The run directory is ``runs/<name>``: re-running the same command resumes from its ``checkpoints/last.ckpt``
(step, optimisers, discriminator, LR schedules, codebook statistics and the data position). At the end the
tokenizer is exported to ``runs/<name>/tokenizer/`` (``config.json`` + ``model.safetensors``).
``trainer.max_steps`` counts training batches (generator updates), also with the discriminator on.

Fine-tuning: ``init_from=DIR`` starts from a converted release (``varkit convert vae_ch160v4096z32.pth ...``) or an
earlier ``<run>/tokenizer`` export (strict, :mod:`varkit.checkpoint.init`); ``finetune.decoder_only=true`` trains
the decoder only and keeps the token space (a transformer trained on the old tokens stays valid).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

HELP = "train the multi-scale VQVAE tokenizer (Lightning), then export it to <run>/tokenizer"
CONFIG_NAME = "train_tokenizer"

logger = logging.getLogger(__name__)


def build_training(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """``(module, datamodule, trainer)`` from a composed ``train_tokenizer`` config (no training yet)."""
    import lightning as L

    from varkit.config import instantiate_group, safe_instantiate
    from varkit.errors import ConfigError
    from varkit.lit.tokenizer import TokenizerModule
    from varkit.tracking import build_loggers

    L.seed_everything(int(cfg.seed), workers=True)
    if cfg.trainer.get("gradient_clip_val") is not None:
        raise ConfigError(
            "trainer.gradient_clip_val cannot be used with the tokenizer's manual optimisation; set optim.grad_clip"
        )
    if cfg.trainer.get("accumulate_grad_batches", 1) not in (1, None):
        raise ConfigError("trainer.accumulate_grad_batches must be 1 for the tokenizer (manual optimisation)")
    gan = cfg.get("gan") or {}
    if gan.get("enabled") and cfg.trainer.get("strategy") == "ddp":
        # the discriminator's backward leaves the VQVAE's parameters without gradients: plain DDP would wait for
        # them forever (or fail on the next step)
        raise ConfigError(
            "gan.enabled needs trainer.strategy=ddp_find_unused_parameters_true under DDP (two backward passes per "
            "step, each leaving one network without gradients)"
        )
    initialize = None
    if cfg.get("init_from"):
        checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
        if bool(cfg.get("resume", True)) and any(checkpoints.glob("last*.ckpt")):
            logger.info("init_from=%s ignored: resuming this run from its own last.ckpt", cfg.init_from)
        else:
            initialize = _initializer(cfg)
    module = TokenizerModule.from_config(cfg, initialize=initialize)
    image_size = module.vae.image_size
    data_size = cfg.data.get("image_size")
    if data_size is not None and tuple(data_size if not isinstance(data_size, int) else (data_size, data_size)) != (
        image_size
    ):
        raise ConfigError(
            f"data.image_size={data_size} differs from the tokenizer's image_size={image_size[0]}; set both the same"
        )
    datamodule = safe_instantiate(cfg.data)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = build_loggers(cfg.get("logger"))
    trainer = safe_instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return module, datamodule, trainer


def _initializer(cfg: DictConfig) -> Any:
    from varkit.checkpoint.init import initialize_from

    strict = bool((cfg.get("finetune") or {}).get("strict", True))
    report_path = Path(cfg.paths.output_dir) / "init_report.json"

    def initialize(vae: Any) -> None:
        initialize_from(vae, str(cfg.init_from), strict=strict).write(report_path)
        logger.info("initialisation report: %s", report_path)

    return initialize


def run(cfg: DictConfig) -> None:
    from varkit.checkpoint.export import export_tokenizer
    from varkit.config import to_plain
    from varkit.tracking import finish_wandb_runs, log_run_info

    module, datamodule, trainer = build_training(cfg)
    output_dir = Path(cfg.paths.output_dir)
    checkpoints = output_dir / "checkpoints"
    resume = bool(cfg.get("resume", True)) and any(checkpoints.glob("last*.ckpt"))
    if resume:
        logger.info("resuming from %s", checkpoints / "last.ckpt")
    log_run_info(trainer.loggers, to_plain(cfg), world_size=trainer.world_size)
    # Lightning warns (with a long code example) that manual-optimisation checkpoints hold the weights *after* the
    # step; that is what resuming needs: global_step counts the steps already applied.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path="last" if resume else None)
    finally:
        finish_wandb_runs(trainer.loggers)
    if trainer.interrupted:
        return
    if trainer.is_global_zero:
        exported = export_tokenizer(module.vae, output_dir / "tokenizer")
        if module.codebook_health_report is not None:  # the last validation's per-scale usage, beside the weights
            health = json.dumps(module.codebook_health_report, indent=1)
            (Path(exported) / "codebook_health.json").write_text(health + "\n")
        sys.stdout.write(f"tokenizer exported to {exported}\n")
