"""``varkit config NAME [overrides]``: compose, validate and print a config (``train_var``, ``sample``, ...)."""

from __future__ import annotations

import argparse

HELP = "compose, validate and print a primary config with overrides (e.g. `varkit config train_var model=var_d16`)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="primary config: train_tokenizer, train_var, sample, eval, ...")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. attention=sdpa trainer.max_steps=10")
    parser.add_argument("--resolve", action="store_true", help="resolve interpolations before printing")


def run(args: argparse.Namespace) -> int:
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from varkit.cli import fail, hydra_message
    from varkit.config import check_hydra_node, compose, config_dir, validate_components

    available = sorted(p.stem for p in config_dir().glob("*.yaml"))
    if args.name not in available:
        return fail(f"unknown config {args.name!r}; available: {', '.join(available)}")
    try:
        cfg = compose(args.name, args.overrides, with_hydra=True)
        check_hydra_node(cfg.hydra)
        with open_dict(cfg):
            del cfg["hydra"]
        validate_components(cfg)
        print(OmegaConf.to_yaml(cfg, resolve=args.resolve), end="")
    except (HydraException, OmegaConfBaseException) as err:
        return fail(hydra_message(err))
    return 0
