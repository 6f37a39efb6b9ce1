"""``varkit.tracking``: W&B credential detection and mode choice, logger construction, run info, histograms."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from varkit import tracking
from varkit.cli import overrides
from varkit.errors import ConfigError


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(tracking, "_settings_api_key", lambda: None)
    return tmp_path


def _write_netrc(home: Path, host: str) -> None:
    (home / ".netrc").write_text(f"machine {host}\n  login user\n  password secret-key\n")
    (home / ".netrc").chmod(0o600)


def test_credentials_from_environment_netrc_or_settings(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tracking.wandb_credentials_available()
    _write_netrc(no_credentials, "example.org")  # an entry for another host does not count
    assert not tracking.wandb_credentials_available()
    _write_netrc(no_credentials, "api.wandb.ai")
    assert tracking.wandb_credentials_available()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.mycompany.internal")  # a self-hosted server
    assert not tracking.wandb_credentials_available()
    _write_netrc(no_credentials, "wandb.mycompany.internal")
    assert tracking.wandb_credentials_available()
    (no_credentials / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert tracking.wandb_credentials_available()
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setattr(tracking, "_settings_api_key", lambda: "k" * 40)
    assert tracking.wandb_credentials_available()


def test_online_falls_back_to_offline_with_one_log_line(no_credentials: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="varkit.tracking"):
        assert tracking.resolve_wandb_mode("online") == "offline"
    assert [r.getMessage() for r in caplog.records if "no W&B credentials" in r.getMessage()] != []
    assert len(caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="varkit.tracking"):
        assert tracking.resolve_wandb_mode("offline") == "offline"
        assert tracking.resolve_wandb_mode("disabled") == "disabled"
    assert caplog.records == []
    assert tracking.resolve_wandb_mode(None) == "offline"


def test_online_kept_with_credentials_and_env_mode_respected(
    no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_netrc(no_credentials, "api.wandb.ai")
    assert tracking.resolve_wandb_mode("online") == "online"
    assert tracking.resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # e.g. CI switches W&B off globally
    assert tracking.resolve_wandb_mode("online") == "disabled"
    with pytest.raises(ConfigError, match="expected one of online, offline, disabled"):
        tracking.resolve_wandb_mode("sometimes")


def _wandb_node(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    node = {
        "_target_": "lightning.pytorch.loggers.WandbLogger",
        "project": "p",
        "entity": None,
        "group": "g",
        "job_type": "var",
        "tags": ["demo", 3],
        "notes": None,
        "name": "run-a",
        "id": None,
        "save_dir": str(tmp_path / "out"),
        "mode": "online",
        "log_model": False,
    }
    return {**node, **changes}


def test_build_wandb_logger_passes_config_and_resolved_mode(no_credentials: Path, tmp_path: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    run_logger = tracking.build_wandb_logger(_wandb_node(tmp_path))
    assert isinstance(run_logger, WandbLogger)
    init = run_logger._wandb_init  # what wandb.init will receive (the run is created lazily)
    assert init["mode"] == "offline" and init["project"] == "p" and init["group"] == "g" and init["name"] == "run-a"
    assert init["tags"] == ["demo", "3"] and init["job_type"] == "var"
    assert "entity" not in init and "notes" not in init
    assert (tmp_path / "out").is_dir()
    with pytest.raises(ConfigError, match="not allowed"):
        tracking.build_wandb_logger(_wandb_node(tmp_path, _target_="os.system"))


def test_build_loggers_builds_every_entry(no_credentials: Path, tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    group = {
        "csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(tmp_path), "name": "csv"},
        "wandb": _wandb_node(tmp_path, mode="disabled"),
        "off": None,
    }
    built = tracking.build_loggers(group)
    assert [type(x) for x in built] == [CSVLogger, WandbLogger]
    assert built[1]._wandb_init["mode"] == "disabled"
    assert tracking.build_loggers(None) == []


def test_wandb_config_composes_with_env_project(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_PROJECT", "from-agent")
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    node = compose_cfg("train_var", ["logger=wandb"]).logger.wandb
    assert node.project == "from-agent" and node.entity is None and node.mode == "online"
    assert node.job_type == "var" and node.name == "var-demo"


def test_system_info_is_plain_data() -> None:
    import varkit

    info = tracking.system_info(world_size=4)
    assert info["world_size"] == 4 and info["varkit"] == varkit.__version__ and info["torch"] == torch.__version__
    assert info["device"] == ("cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0))
    assert info["torch_threads"] == torch.get_num_threads()
    yaml.safe_dump(info)  # nothing but plain values


def test_log_run_info_records_config_and_system_with_csv_logger(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger
    from omegaconf import OmegaConf

    csv = CSVLogger(tmp_path, name="csv", version="")
    cfg = OmegaConf.create({"optim": {"lr": 0.001, "peak": "${optim.lr}"}})
    tracking.log_run_info([csv], cfg, world_size=2)
    csv.save()
    stored = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert stored["optim"] == {"lr": 0.001, "peak": 0.001}  # resolved
    assert stored["system"]["world_size"] == 2


class _Recorder:
    """A TensorBoard-like logger: ``experiment.add_histogram`` records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, np.ndarray, int]] = []
        self.experiment = self

    def add_histogram(self, key: str, values: Any, step: int) -> None:
        self.calls.append((key, np.asarray(values), step))


class _MetricsOnly:
    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, float], int]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.logged.append((metrics, step))


def test_log_histogram_on_histogram_and_scalar_loggers() -> None:
    usage = torch.tensor([3.0, 0.0, 1.0])
    recorder = _Recorder()
    tracking.log_histogram(recorder, "codebook/usage", usage, step=5, counts=True)
    key, samples, step = recorder.calls[0]
    assert key == "codebook/usage" and step == 5
    assert np.bincount(samples, minlength=3).tolist() == [3, 0, 1]  # counts -> samples with that histogram
    tracking.log_histogram(recorder, "codebook/frequency", usage / 4, step=6)
    assert recorder.calls[1][1].tolist() == [0.75, 0.0, 0.25]

    scalars = _MetricsOnly()
    tracking.log_histogram(scalars, "codebook/usage", usage, step=7)
    metrics, step = scalars.logged[0]
    assert step == 7
    assert metrics == pytest.approx(
        {
            "codebook/usage/mean": 4 / 3,
            "codebook/usage/min": 0.0,
            "codebook/usage/max": 3.0,
            "codebook/usage/nonzero_fraction": 2 / 3,
        }
    )


def test_logging_happens_on_rank_zero_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    recorder, scalars = _Recorder(), _MetricsOnly()
    tracking.log_histogram(recorder, "h", [1.0, 2.0], step=0)
    tracking.log_run_info([scalars], {"a": 1})
    assert recorder.calls == [] and scalars.logged == []


def test_sweep_value_conventions() -> None:
    assert overrides.sweep_overrides({"a.b": None, "c": True, "d": [1, None], "e": 1e-4}) == [
        "a.b=null",
        "c=true",
        "d=[1,null]",
        "e=0.0001",
    ]
    assert overrides.null_overrides(["x=None", "y=none", "--cfg=None", "z=NoneType", "w"]) == [
        "x=null",
        "y=none",
        "--cfg=None",
        "z=NoneType",
        "w",
    ]
