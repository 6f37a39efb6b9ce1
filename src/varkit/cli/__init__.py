"""The ``varkit`` command line: ``varkit <command> [args | Hydra overrides]``.

Argument commands define ``HELP``, ``configure(parser)`` and ``run(args) -> int``; Hydra commands define ``HELP``,
``CONFIG_NAME`` and ``run(cfg) -> None`` and accept Hydra overrides, ``--cfg job``, ``--multirun``, ... .
Plugins are loaded before anything composes, so their components and config options are available everywhere.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["COMMANDS", "main"]

#: command name -> module implementing it (imported only when that command runs, or for --help)
COMMANDS: dict[str, str] = {
    "list": "varkit.cli.list_components",
    "config": "varkit.cli.show_config",
    "data": "varkit.cli.data",
    "train-tokenizer": "varkit.cli.train_tokenizer",
    "train": "varkit.cli.train",
    "sample": "varkit.cli.sample",
    "eval": "varkit.cli.evaluate",
    "edit": "varkit.cli.edit",
    "convert": "varkit.cli.convert",
    "quickstart": "varkit.cli.quickstart",
    "scaling": "varkit.cli.scaling",
}

EXIT_CONFIG_ERROR = 2


def _available() -> dict[str, ModuleType]:
    modules = {}
    for name, path in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(path)
        except ModuleNotFoundError as err:
            if err.name != path:  # the command exists but one of its imports is missing: say so
                raise
    return modules


def fail(message: str, code: int = EXIT_CONFIG_ERROR) -> int:
    """Print one clear error line and return the exit code (no traceback for user errors)."""
    if "Original Traceback" in message:  # raised in a DataLoader worker: torch prepends the worker's traceback
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    sys.stderr.write(f"varkit: error: {message}\n")
    return code


def hydra_message(err: BaseException) -> str:
    """Hydra's composition errors without the config-search-path dump, as one paragraph."""
    text = str(err).split("Config search path:")[0].strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input, reported as one message."""
    from varkit.contracts import CapabilityError, InvalidScalesError
    from varkit.errors import ConfigError, DataSetupError
    from varkit.registry import DuplicateComponentError, UnknownComponentError

    return (
        ConfigError,
        InvalidScalesError,
        UnknownComponentError,
        DuplicateComponentError,
        CapabilityError,
        DataSetupError,
        # a path the user gave that is a file, a folder, missing or not theirs to write
        FileExistsError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
    )


def describe(err: BaseException) -> str:
    """The one sentence for a user error (file-system errors as "<path>: <reason>")."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror.lower()}"
    return str(err)


def precheck(config_name: str, argv: Sequence[str]) -> None:
    """Compose the config as Hydra is about to and validate it — Hydra's own node included (its callbacks, launcher
    and logging configuration run before any varkit code) — so a bad config is reported as one sentence before
    Hydra creates the run directory, also for ``--cfg job``. Raises :class:`~varkit.errors.ConfigError`."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    from varkit.config import check_hydra_node, compose_for_check, validate_components, validate_for_run
    from varkit.errors import ConfigError

    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
    except SystemExit:
        return
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return
    overrides = list(args.overrides)
    if args.config_dir:  # as Hydra does for --config-dir: one more (first) search path entry
        if any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides):
            return  # both: Hydra merges them its own way; the job-level checks still run
        overrides.append(f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]")
    try:
        cfg = compose_for_check(args.config_name or config_name, overrides, multirun=bool(args.multirun))
    except OverrideParseException as err:
        braces = [
            o for o in args.overrides if "{" in o and ".." in o and not o.split("=", 1)[-1].startswith(("'", '"'))
        ]
        if braces:
            key, _, value = braces[0].partition("=")
            raise ConfigError(
                f"the override {braces[0]!r} holds a brace pattern, which Hydra reads as a dictionary: quote the "
                f"value, e.g. '{key}=\"{value}\"' (single quotes around the whole argument in the shell)"
            ) from None
        raise ConfigError(hydra_message(err)) from None
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(hydra_message(err)) from None
    check_hydra_node(cfg.get("hydra"))
    if args.multirun:
        _precheck_sweep(args.config_name or config_name, overrides)
        return
    if not args.cfg:  # the run directory Hydra is about to create
        from omegaconf import OmegaConf

        from varkit.validation import check_output_dir

        try:
            run_dir = OmegaConf.select(cfg, "hydra.run.dir")
        except OmegaConfBaseException:
            run_dir = None
        check_output_dir("hydra.run.dir", run_dir)
    with open_dict(cfg):  # the job's config as the job will see it
        del cfg["hydra"]
    try:
        (validate_components if args.cfg else validate_for_run)(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(hydra_message(err)) from None


def _precheck_sweep(config_name: str, overrides: list[str]) -> None:
    """Validate each value of each sweep override (the others at their first value) before any job starts, so a bad
    value is one sentence, not a failed job in the middle of a sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    from varkit.config import compose_for_check, validate_components
    from varkit.errors import ConfigError

    parsed = OverridesParser.create().parse_overrides(overrides)
    values: list[list[str]] = []
    for override in parsed:
        if override.is_sweep_override():
            try:
                values.append([f"{override.get_key_element()}={v}" for v in override.sweep_string_iterator()])
            except (HydraException, TypeError, ValueError):  # e.g. interval sweeps: checked by each job
                values.append([])
        else:
            values.append([override.input_line])
    first = [options[0] if options else None for options in values]
    checked: set[tuple[str, ...]] = set()
    for index, options in enumerate(values):
        for option in options[: 64 if len(options) > 1 else 1]:
            combo = tuple(o for o in [*first[:index], option, *first[index + 1 :]] if o is not None)
            if combo in checked:
                continue
            checked.add(combo)
            try:
                cfg = compose_for_check(config_name, list(combo))
                with open_dict(cfg):
                    del cfg["hydra"]
                validate_components(cfg)
            except (HydraException, OmegaConfBaseException) as err:
                raise ConfigError(hydra_message(err)) from None


def run_hydra(command: str, config_name: str, task: Callable[[Any], Any], argv: Sequence[str]) -> int:
    """Run ``task(cfg)`` as a Hydra application over varkit's configs (overrides, --cfg, --multirun all work)."""
    import hydra
    from omegaconf import DictConfig

    from varkit.cli.overrides import null_overrides
    from varkit.config import config_dir, register_presets, register_resolvers, validate_for_run

    register_resolvers()
    register_presets()
    errors = user_errors()
    try:
        precheck(config_name, null_overrides(argv))
    except errors as err:
        return fail(describe(err))
    outcome: dict[str, int] = {"code": 0}

    def job(cfg: DictConfig) -> Any:
        try:
            validate_for_run(cfg)
            return task(cfg)
        except errors as err:
            outcome["code"] = fail(describe(err))
            if len(argv) and any(a in ("-m", "--multirun") for a in argv):
                raise
            return None

    app = hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(job)
    saved = sys.argv
    sys.argv = [f"varkit {command}", *null_overrides(argv)]
    try:
        app()
    except errors:
        return outcome["code"] or EXIT_CONFIG_ERROR
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else fail(exit_.code, 1)
    finally:
        sys.argv = saved
    return outcome["code"]


def build_parser(modules: dict[str, ModuleType]) -> argparse.ArgumentParser:
    from varkit import __version__

    parser = argparse.ArgumentParser(
        prog="varkit",
        description="varkit: Visual AutoRegressive modeling (next-scale prediction). "
        "Hydra commands take overrides such as `model=var_d16 trainer.max_steps=100` and `--cfg job`.",
    )
    parser.add_argument("--version", action="version", version=f"varkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in modules.items():
        help_text = getattr(module, "HELP", "")
        if hasattr(module, "CONFIG_NAME"):
            help_text += f"  [Hydra: conf/{module.CONFIG_NAME}.yaml + overrides]"
            sub.add_parser(name, help=help_text, add_help=False)
        else:
            cmd = sub.add_parser(name, help=help_text, description=getattr(module, "HELP", None))
            module.configure(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in args_list[:1])
    if verbose:
        args_list = args_list[1:]
    from varkit.plugins import PluginError, load_plugins

    try:
        load_plugins()
    except PluginError as err:
        return fail(str(err), 1)

    modules = _available()
    if args_list and args_list[0] in modules and hasattr(modules[args_list[0]], "CONFIG_NAME"):
        # Hydra configures logging for its jobs (conf/hydra/default.yaml); a second root handler would print twice
        module = modules[args_list[0]]
        return run_hydra(args_list[0], module.CONFIG_NAME, module.run, args_list[1:])
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="[varkit] %(message)s")

    parser = build_parser(modules)
    args = parser.parse_args(args_list)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return int(modules[args.command].run(args) or 0)
    except user_errors() as err:
        return fail(describe(err))


if __name__ == "__main__":
    raise SystemExit(main())
