"""Sweeps: every W&B sweep spec in ``conf/sweep/`` is valid and its command composes with Hydra; the Hydra
multirun equivalent matches the grid spec; ``varkit train --multirun`` runs one job per value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from var_stage_data import make_tiny_stage, train_overrides

from varkit.cli import main
from varkit.cli.overrides import null_overrides
from varkit.config import compose, config_dir, validate_components

SWEEP_DIR = config_dir() / "sweep"
SPECS = sorted(SWEEP_DIR.glob("*.yaml"))

METHODS = {"grid", "random", "bayes"}
#: distributions of W&B sweeps and the bounds they need (``*_values`` take the values themselves as bounds)
DISTRIBUTIONS = {
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
    "beta",
    "q_beta",
}
PARAMETER_KEYS = {"value", "values", "distribution", "min", "max", "q", "mu", "sigma", "a", "b", "probabilities"}
#: macros the W&B agent expands in ``command`` (wandb/wandb_agent.py, sdk/launch/sweeps/utils.py)
AGENT_MACROS = {
    "env",
    "interpreter",
    "program",
    "args",
    "args_no_equals",
    "args_no_hyphens",
    "args_no_boolean_flags",
    "args_json",
    "args_json_file",
    "args_append_hydra",
    "args_override_hydra",
}
#: argument macros Hydra accepts (``--key=value`` is rejected by Hydra's override parser)
HYDRA_ARGUMENT_MACROS = {"args_no_hyphens", "args_override_hydra", "args_append_hydra"}


def load(path: Path) -> dict[str, Any]:
    spec = yaml.safe_load(path.read_text())
    assert isinstance(spec, dict), f"{path.name}: not a mapping"
    return spec


def schema_problems(spec: dict[str, Any]) -> list[str]:
    """Violations of the W&B sweep-config schema (method, metric, parameters, early_terminate, command)."""
    problems = []
    known = {"program", "method", "metric", "parameters", "command", "early_terminate", "name", "description"}
    known |= {"run_cap", "project", "entity", "controller", "job", "image_uri", "scheduler"}
    problems += [f"unknown top-level key {key!r}" for key in set(spec) - known]
    if spec.get("method") not in METHODS:
        problems.append(f"method must be one of {sorted(METHODS)}")
    metric = spec.get("metric")
    if spec.get("method") == "bayes" or metric is not None:
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
            problems.append("metric needs a name")
        elif metric.get("goal", "minimize") not in ("minimize", "maximize"):
            problems.append("metric.goal must be minimize or maximize")
    parameters = spec.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        return [*problems, "parameters must be a non-empty mapping"]
    for name, parameter in parameters.items():
        problems += [f"{name}: {p}" for p in parameter_problems(parameter, spec.get("method"))]
    if "early_terminate" in spec:
        terminate = spec["early_terminate"]
        if terminate.get("type") != "hyperband" or not ({"min_iter", "max_iter"} & set(terminate)):
            problems.append("early_terminate: type hyperband with min_iter or max_iter")
    if "run_cap" in spec and not (isinstance(spec["run_cap"], int) and spec["run_cap"] > 0):
        problems.append("run_cap must be a positive integer")
    return problems


def parameter_problems(parameter: Any, method: str | None) -> list[str]:
    if not isinstance(parameter, dict):
        return ["must be a mapping"]
    problems = [f"unknown key {key!r}" for key in set(parameter) - PARAMETER_KEYS]
    if "value" in parameter:
        if parameter["value"] is None:
            problems.append('null value: write "null" (W&B passes None as the string "None")')
        return problems
    if "values" in parameter:
        values = parameter["values"]
        if not isinstance(values, list) or not values:
            problems.append("values must be a non-empty list")
        elif any(v is None for v in values):
            problems.append('null value: write "null" (W&B passes None as the string "None")')
        return problems
    if method == "grid":
        return [*problems, "grid search needs value/values (no distributions)"]
    distribution = parameter.get("distribution")
    if distribution is None:  # W&B infers uniform / int_uniform from min and max
        distribution = "int_uniform" if isinstance(parameter.get("min"), int) else "uniform"
    if distribution not in DISTRIBUTIONS:
        return [*problems, f"unknown distribution {distribution!r}"]
    if distribution in ("normal", "q_normal", "log_normal", "q_log_normal"):
        return problems
    low, high = parameter.get("min"), parameter.get("max")
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
        problems.append("needs numeric min < max")
    elif distribution.endswith("_values") and low <= 0:
        problems.append(f"{distribution} needs min > 0")
    if distribution.startswith("q_") and not parameter.get("q", 1) > 0:
        problems.append("q must be positive")
    if distribution == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
        problems.append("int_uniform needs integer bounds")
    return problems


def sample_values(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Two assignments: every parameter at its first choice / lower bound, then its last choice / upper bound."""
    assignments: list[dict[str, Any]] = [{}, {}]
    for name, parameter in spec["parameters"].items():
        if "value" in parameter:
            choices = [parameter["value"], parameter["value"]]
        elif "values" in parameter:
            choices = [parameter["values"][0], parameter["values"][-1]]
        else:
            low, high = parameter["min"], parameter["max"]
            quantum = parameter.get("q")
            choices = (
                [low, high] if quantum is None else [round(low / quantum) * quantum, round(high / quantum) * quantum]
            )
            if (
                parameter.get("distribution", "").startswith("log_uniform")
                and "values" not in parameter["distribution"]
            ):
                choices = [math.exp(low), math.exp(high)]
        for assignment, choice in zip(assignments, choices, strict=True):
            assignment[name] = choice
    return assignments


def agent_command(spec: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The argv the W&B agent runs for ``values``: its own argument formatting, its macro expansion rules."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    expansions = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    expansions |= {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": [spec["program"]]}
    command: list[str] = []
    for chunk in map(str, spec["command"]):
        if chunk.startswith("${") and chunk.endswith("}"):
            command += expansions[chunk[2:-1]]
        else:
            command.append(chunk)
    return command


def train_arguments(command: list[str]) -> list[str]:
    """What follows ``varkit train`` (``varkit train`` or ``python -m varkit train``)."""
    assert "varkit" in command and command[command.index("varkit") + 1] == "train", command
    return command[command.index("varkit") + 2 :]


def test_there_are_sweep_specs_for_every_method() -> None:
    assert {load(path)["method"] for path in SPECS} == METHODS


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_sweep_spec_is_valid(path: Path) -> None:
    spec = load(path)
    assert schema_problems(spec) == []
    assert isinstance(spec.get("program"), str), "the agent reads `program` even when the command does not use it"
    command = spec["command"]
    assert isinstance(command, list) and all(isinstance(c, (str, int, float)) for c in command)
    macros = {c[2:-1] for c in map(str, command) if c.startswith("${") and c.endswith("}")}
    assert macros <= AGENT_MACROS, f"unknown agent macros {macros - AGENT_MACROS}"
    assert macros & HYDRA_ARGUMENT_MACROS, "parameters must reach Hydra as key=value (e.g. ${args_no_hyphens})"
    assert not {"args", "args_no_equals", "args_no_boolean_flags"} & macros, "Hydra rejects --key=value"
    try:  # W&B's own validator when its `sweeps` engine is installed (not a varkit dependency)
        import sweeps
    except ImportError:
        return
    assert sweeps.schema_violations_from_proposed_config(spec) == []


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_sweep_command_composes_with_hydra(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load(path)
    monkeypatch.setenv("VARKIT_HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")  # set by the agent for each trial
    for values in sample_values(spec):
        arguments = train_arguments(agent_command(spec, values))
        cfg = compose("train_var", arguments)
        validate_components(cfg)
        assert cfg.name == "sweep-abc123"  # one run directory per trial: no accidental resume
        assert "_target_" in cfg.logger.wandb
        for key, value in values.items():
            composed = cfg
            for part in key.split("."):
                composed = composed[part]
            if value == "null":
                assert composed is None, f"{key}: 'null' must reach the config as None"
            elif isinstance(value, float):
                assert composed == pytest.approx(value), key
            else:
                assert composed == value, key


def test_null_convention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML null in a spec arrives as ``key=None`` (a string for Hydra); ``"null"`` or :func:`null_overrides`
    give None."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    monkeypatch.setenv("VARKIT_HOME", str(tmp_path))
    as_agent_formats = create_sweep_command_args({"args": {"optim.weight_decay_end": {"value": None}}})
    assert as_agent_formats["args_no_hyphens"] == ["optim.weight_decay_end=None"]
    assert compose("train_var", as_agent_formats["args_no_hyphens"]).optim.weight_decay_end == "None"
    assert compose("train_var", null_overrides(as_agent_formats["args_no_hyphens"])).optim.weight_decay_end is None
    spelled = create_sweep_command_args({"args": {"optim.weight_decay_end": {"value": "null"}}})
    assert compose("train_var", spelled["args_no_hyphens"]).optim.weight_decay_end is None


def test_hydra_multirun_experiment_is_the_grid_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VARKIT_HOME", str(tmp_path))
    cfg = compose("train_var", ["experiment=sweep_demo"], with_hydra=True)
    params = {
        key: [yaml.safe_load(v) for v in str(value).split(",")] for key, value in cfg.hydra.sweeper.params.items()
    }
    grid = load(SWEEP_DIR / "demo_grid.yaml")["parameters"]
    assert params == {key: parameter["values"] for key, parameter in grid.items()}
    assert cfg.hydra.sweep.dir.endswith("runs/sweep-demo-multirun")


def test_multirun_runs_one_job_per_value(tmp_path: Path) -> None:
    stage = make_tiny_stage(tmp_path / "stage", train_per_class=4)
    overrides = train_overrides(
        stage,
        tmp_path,
        "name=multi",
        "trainer.limit_val_batches=0",
        "callbacks.sample_grid.at_end=false",
        "trainer.max_steps=1,2",
    )
    assert main(["train", "--multirun", *overrides]) == 0
    sweep = tmp_path / "runs" / "multi-multirun"
    assert (sweep / "multirun.yaml").is_file()
    for job, steps in ((0, 1), (1, 2)):
        run = sweep / str(job)
        assert yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())[-1] == f"trainer.max_steps={steps}"
        checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert checkpoint["global_step"] == steps
        assert (run / "model" / "model.safetensors").is_file()
        assert (run / "csv" / "metrics.csv").is_file()
