"""Experiment tracking with Weights & Biases: the run logger, what every run records, sweep-value conventions.

Builds the Lightning :class:`~lightning.pytorch.loggers.WandbLogger` from the ``logger.wandb`` config node
(``conf/logger/wandb.yaml``), choosing the W&B mode so that a missing login never blocks training:

* ``online`` (the default) needs credentials — ``WANDB_API_KEY``, a ``~/.netrc`` entry for the W&B host (what
  ``wandb login`` writes) or a key in W&B's settings; without any, the run is logged ``offline`` (one log line
  says so) and can be uploaded later with ``wandb sync <run>/wandb/offline-run-*``;
* ``offline`` writes the run folder locally, never contacts a server;
* ``disabled`` writes nothing.

Every run records the resolved config as plain data and :func:`system_info` (library versions, device, threads,
world size). :func:`log_histogram` is the one call the stages use for distributions (codebook usage of the
tokenizer), on any logger. All logging functions act on global rank zero only.

Sweep-value conventions (``None`` from W&B's agent) live with the command line: :mod:`varkit.cli.overrides`.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import platform
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

import numpy as np
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = [
    "WANDB_MODES",
    "AppendingCSVLogger",
    "build_loggers",
    "build_wandb_logger",
    "finish_wandb_runs",
    "is_wandb_logger",
    "log_histogram",
    "log_run_info",
    "resolve_wandb_mode",
    "system_info",
    "wandb_credentials_available",
]

logger = logging.getLogger(__name__)

#: modes W&B accepts; ``online`` falls back to ``offline`` without credentials
WANDB_MODES: tuple[str, ...] = ("online", "offline", "disabled")
DEFAULT_WANDB_HOST = "https://api.wandb.ai"


class _AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued, not deleted."""

    def _check_log_dir_exists(self) -> None:
        # Lightning deletes metrics.csv of an existing log folder: on resume that erases every earlier segment's
        # metrics (even when the resume then fails). Continue the file instead: its header gives the known columns.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])


class AppendingCSVLogger(CSVLogger):
    """:class:`~lightning.pytorch.loggers.CSVLogger` whose ``metrics.csv`` survives resumes (rows are appended;
    a resumed segment may repeat the steps logged after its checkpoint, with its own values)."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def _wandb_host() -> str:
    url = os.environ.get("WANDB_BASE_URL", DEFAULT_WANDB_HOST)
    return urlparse(url if "://" in url else f"https://{url}").hostname or "api.wandb.ai"


def _netrc_has(host: str) -> bool:
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _settings_api_key() -> str | None:
    """An API key stored in W&B's own settings files (rare; ``wandb login`` writes ``~/.netrc``)."""
    from wandb.sdk import wandb_setup

    return wandb_setup.singleton().settings.api_key


def wandb_credentials_available() -> bool:
    """Whether W&B can log in without prompting: ``WANDB_API_KEY``, a netrc entry for the host, or a stored key.

    The same sources ``wandb.api.api_key`` consults (that attribute is deprecated in wandb 0.31 and prints a
    warning on every access), checked without any network call.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    if _netrc_has(_wandb_host()):
        return True
    return bool(_settings_api_key())


def resolve_wandb_mode(requested: str | None) -> str:
    """The W&B mode a run uses: ``requested`` (``online`` when ``None``), but ``offline`` without credentials.

    >>> resolve_wandb_mode("disabled")
    'disabled'
    """
    mode = "online" if requested in (None, "auto") else str(requested)
    if mode not in WANDB_MODES:
        from varkit.errors import ConfigError

        raise ConfigError(f"logger.wandb.mode={requested!r}: expected one of {', '.join(WANDB_MODES)}")
    if mode == "online" and os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        mode = "offline" if os.environ["WANDB_MODE"] == "dryrun" else os.environ["WANDB_MODE"]
    if mode == "online" and not wandb_credentials_available():
        if getattr(rank_zero_only, "rank", 0) == 0:  # said once per run, not once per process
            logger.info(
                "no W&B credentials (WANDB_API_KEY unset, no ~/.netrc entry for %s): logging offline; "
                "upload later with `wandb sync <run>/wandb/offline-run-*`",
                _wandb_host(),
            )
        return "offline"
    return mode


def is_wandb_logger(run_logger: Any) -> bool:
    """Whether ``run_logger`` is Lightning's W&B logger (checked by type, without importing wandb)."""
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(run_logger, WandbLogger)


def build_wandb_logger(node: Mapping[str, Any] | Any) -> Any:
    """A :class:`WandbLogger` from a ``logger.wandb`` node (``_target_`` + WandbLogger/``wandb.init`` arguments).

    ``mode`` goes through :func:`resolve_wandb_mode`; ``save_dir`` is created (W&B writes ``<save_dir>/wandb``);
    empty ``tags`` and null ``entity``/``group``/``id`` are left to W&B's defaults.
    """
    from omegaconf import OmegaConf

    from varkit.config import safe_instantiate, to_plain

    plain = dict(to_plain(node))
    plain["mode"] = resolve_wandb_mode(plain.get("mode"))
    plain.setdefault("_target_", "lightning.pytorch.loggers.WandbLogger")
    for key in ("entity", "group", "id", "job_type", "notes"):
        if plain.get(key) is None:
            plain.pop(key, None)
    if not plain.get("tags"):
        plain.pop("tags", None)
    else:
        plain["tags"] = [str(tag) for tag in plain["tags"]]
    if plain.get("save_dir"):
        os.makedirs(plain["save_dir"], exist_ok=True)
    return safe_instantiate(OmegaConf.create(plain))


def build_loggers(group: Mapping[str, Any] | Any) -> list[Any]:
    """Every logger of a ``logger`` group (``{key: {_target_: ...}}``); W&B entries via :func:`build_wandb_logger`."""
    from varkit.config import safe_instantiate

    loggers: list[Any] = []
    for entry in (group or {}).values():
        if entry is None or "_target_" not in entry:
            continue
        if str(entry["_target_"]).endswith("WandbLogger"):
            loggers.append(build_wandb_logger(entry))
        else:
            loggers.append(safe_instantiate(entry))
    return loggers


def finish_wandb_runs(loggers: Iterable[Any]) -> None:
    """Finish the W&B runs that ``loggers`` started (call at the end of a job).

    Lightning's ``WandbLogger`` attaches to an already active ``wandb.run`` instead of starting a new one, so
    without this the second job of a Hydra multirun (or a second training in a notebook) would log into the first
    job's W&B run. Loggers whose run was never created are left alone.
    """
    for run_logger in loggers:
        if is_wandb_logger(run_logger) and getattr(run_logger, "_experiment", None) is not None:
            run_logger.experiment.finish()
            run_logger._experiment = None


def system_info(world_size: int | None = None) -> dict[str, Any]:
    """Versions, device, threads and world size of this process, as plain data.

    ``world_size`` defaults to the ``WORLD_SIZE`` environment variable (1 when unset).
    """
    import lightning
    import torch

    import varkit

    info: dict[str, Any] = {
        "varkit": str(varkit.__version__),
        "torch": str(torch.__version__),
        "lightning": str(lightning.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": int(world_size if world_size is not None else os.environ.get("WORLD_SIZE", 1)),
        "cuda": str(torch.version.cuda) if torch.version.cuda else None,
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["device_count"] = torch.cuda.device_count()
    else:
        info["device"] = "cpu"
        info["device_count"] = 0
    return info


@rank_zero_only
def log_run_info(loggers: Iterable[Any], config: Any, *, world_size: int | None = None) -> None:
    """Record the resolved ``config`` (plain data) and :func:`system_info` with every logger (rank zero only).

    W&B gets them in the run config (``config`` keys at top level, system info under ``system``, so sweep
    parameters such as ``optim.lr`` line up); other loggers get them as hyper-parameters.
    """
    from varkit.config import to_plain

    plain = to_plain(config)
    plain = dict(plain) if isinstance(plain, Mapping) else {"config": plain}
    system = system_info(world_size)
    for run_logger in loggers:
        if is_wandb_logger(run_logger):
            run_logger.experiment.config.update({**plain, "system": system}, allow_val_change=True)
        else:
            run_logger.log_hyperparams({**plain, "system": system})


def _histogram_data(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


@rank_zero_only
def log_histogram(run_logger: Any, key: str, values: Any, step: int, *, counts: bool = False) -> None:
    """Log the distribution of ``values`` under ``key`` at ``step`` (rank zero only).

    ``counts=False``: ``values`` are samples (e.g. per-code usage frequencies) and are binned. ``counts=True``:
    ``values[i]`` is already the count of bin ``i`` (e.g. hits per codebook index), logged as that exact
    histogram. W&B gets a ``wandb.Histogram``, TensorBoard ``add_histogram``; loggers without histograms
    (CSV) get summary scalars ``<key>/mean``, ``/min``, ``/max``, ``/nonzero_fraction``.
    """
    data = _histogram_data(values)
    if is_wandb_logger(run_logger):
        import wandb

        if counts:
            edges = np.arange(len(data) + 1, dtype=np.float64)
            histogram = wandb.Histogram(np_histogram=(data, edges))
        else:
            histogram = wandb.Histogram(data, num_bins=min(64, max(1, data.size)))
        run_logger.experiment.log({key: histogram, "trainer/global_step": step})
        return
    experiment = getattr(run_logger, "experiment", None)
    if hasattr(experiment, "add_histogram"):
        if counts:
            samples = np.repeat(np.arange(len(data)), np.maximum(data, 0).astype(np.int64))
            experiment.add_histogram(key, samples, step)
        else:
            experiment.add_histogram(key, data, step)
        return
    summary = {
        f"{key}/mean": float(data.mean()) if data.size else 0.0,
        f"{key}/min": float(data.min()) if data.size else 0.0,
        f"{key}/max": float(data.max()) if data.size else 0.0,
        f"{key}/nonzero_fraction": float((data != 0).mean()) if data.size else 0.0,
    }
    run_logger.log_metrics(summary, step=step)
