"""VARModule, its optimiser/schedule, EMA and sampling output helpers (no Trainer run; fast)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varkit.image_io import make_grid, save_npz
from varkit.lit.var_callbacks import EMA
from varkit.lit.var_module import VARModule
from varkit.models.flops import training_flops_per_sample
from varkit.models.var import VAR
from varkit.models.vqvae import vqvae_preset
from varkit.training.optim import (
    ScheduleSpec,
    lr_factor,
    no_decay_names,
    param_groups,
    scaled_learning_rate,
    weight_decay_at,
)


@pytest.fixture(scope="module")
def tokenizer() -> torch.nn.Module:
    torch.manual_seed(0)
    vae = vqvae_preset("vqvae_tiny").eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def _module(tokenizer: torch.nn.Module, **model_overrides) -> VARModule:
    from varkit.models.factory import model_arguments
    from varkit.models.var_presets import var_preset

    torch.manual_seed(0)
    args = model_arguments({**var_preset("var_tiny"), "class_dropout": 0.0, **model_overrides}, tokenizer, "sdpa")
    return VARModule(args, optim={"batch_size": 8}, tokenizer=tokenizer)


# -- optimiser ------------------------------------------------------------------------------------------------------
def test_no_weight_decay_on_norms_biases_embeddings_and_tokens() -> None:
    model = VAR.from_preset("var_tiny")
    exempt = no_decay_names(model)
    for name in (
        "class_embedding.weight",
        "start_tokens",
        "position_embedding.positions",
        "position_embedding.levels.weight",
        "blocks.0.attention.log_scale",
        "blocks.0.mlp.fc1.bias",
        "blocks.0.attention.q_bias",
        "head.bias",
    ):
        assert name in exempt, name
    for name in ("blocks.0.attention.qkv.weight", "blocks.0.mlp.fc2.weight", "head.weight", "word_embedding.weight"):
        assert name not in exempt, name
    groups = param_groups(model, 0.05)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters())


def test_frozen_parameters_are_left_out() -> None:
    model = VAR.from_preset("var_tiny")
    model.head.weight.requires_grad_(False)
    params = [p for g in param_groups(model, 0.1) for p in g["params"]]
    assert all(p is not model.head.weight for p in params)


def test_learning_rate_scales_with_global_batch() -> None:
    assert scaled_learning_rate(1e-4, 768) == pytest.approx(3e-4)
    assert scaled_learning_rate(1e-4, 256) == pytest.approx(1e-4)


@pytest.mark.parametrize("kind", ["lin0", "lin", "linear", "cos", "exp"])
def test_schedule_warms_up_then_decays_to_final_ratio(kind: str) -> None:
    spec = ScheduleSpec(total_steps=200, warmup_steps=20, kind=kind, warmup_start=0.005, final_ratio=0.01)
    factors = [lr_factor(s, spec) for s in range(200)]
    assert factors[0] == pytest.approx(0.005)
    assert factors[10] == pytest.approx(0.005 + 0.995 * 0.5)
    assert factors[20] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.01)
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(factors[20:]))  # non-increasing after warm-up


def test_reference_lin0_schedule_value() -> None:
    # reference lr_wd_annealing('lin0', ...): flat for 5 % of the post-warm-up span, then linear to wpe
    spec = ScheduleSpec(total_steps=1001, warmup_steps=0, kind="lin0", final_ratio=0.01)
    passed = 0.5
    expected = 0.01 + 0.99 * (1 - passed) / 0.95
    assert lr_factor(500, spec) == pytest.approx(expected)


def test_weight_decay_cosine_annealing() -> None:
    assert weight_decay_at(0, 101, 0.05, 0.0) == pytest.approx(0.05)
    assert weight_decay_at(50, 101, 0.05, 0.0) == pytest.approx(0.025)
    assert weight_decay_at(100, 101, 0.05, 0.0) == pytest.approx(0.0)


def test_bad_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        ScheduleSpec(total_steps=10, kind="triangle")


# -- the module ---------------------------------------------------------------------------------------------------
def test_scales_and_vocabulary_come_from_the_tokenizer(tokenizer: torch.nn.Module) -> None:
    module = _module(tokenizer, scales=[1, 2, 4], codebook_size=999)
    assert module.scales == tokenizer.scales
    assert module.model.codebook_size == tokenizer.quantizer.codebook_size


def test_loss_is_cross_entropy_over_all_tokens_for_every_input_kind(tokenizer: torch.nn.Module) -> None:
    module = _module(tokenizer)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    labels = torch.tensor([0, 4, 9])
    per_scale = tokenizer.tokenize(images)
    flat = torch.cat(per_scale, dim=1)
    targets, inputs = module.teacher_forcing(module.token_maps(flat))
    expected = F.cross_entropy(module.model(labels, inputs).flatten(0, 1), targets.flatten())
    module.log = lambda *a, **k: None  # no trainer attached
    for batch in ((flat, labels), (per_scale, labels), (images, labels)):
        torch.manual_seed(1)
        loss = module.training_step(batch, 0)
        torch.testing.assert_close(loss, expected)


def test_label_smoothing_changes_the_loss(tokenizer: torch.nn.Module) -> None:
    module = _module(tokenizer)
    module.log = lambda *a, **k: None
    batch = (torch.randint(0, 64, (2, 30)), torch.tensor([1, 2]))
    plain = module.training_step(batch, 0)
    module.hparams["loss"]["label_smoothing"] = 0.1
    assert not torch.allclose(module.training_step(batch, 0), plain)


def test_progressive_stages_grow_to_the_last_scale(tokenizer: torch.nn.Module) -> None:
    module = _module(tokenizer)
    module.hparams["optim"]["total_steps"] = 100
    module.hparams["optim"]["warmup_steps"] = 10
    module.hparams["progressive"].update({"fraction": 0.8, "start_scale": 1})
    stages = [module.progressive_stage(s) for s in range(100)]
    assert stages[0] == 1 and stages[10] == 1 and stages[-1] == 3 and stages[80] == 3
    assert stages == sorted(stages) and set(stages) == {1, 2, 3}


def test_progressive_step_trains_only_a_prefix(tokenizer: torch.nn.Module) -> None:
    module = _module(tokenizer)
    module.log = lambda *a, **k: None
    module.hparams["optim"]["total_steps"] = 100
    module.hparams["progressive"].update({"fraction": 0.8, "start_scale": 1})
    tokens = torch.randint(0, 64, (2, 30))
    labels = torch.tensor([1, 2])
    loss = module.training_step((tokens, labels), 0)  # stage 1: scales 1x1 and 2x2 = 5 tokens
    targets, inputs = module.teacher_forcing(module.token_maps(tokens))
    logits = module.model(labels, inputs[:, :4])
    expected = F.cross_entropy(logits.transpose(1, 2), targets[:, :5], reduction="none").sum(1).mean() / 30
    torch.testing.assert_close(loss, expected)


def test_flops_estimate_is_dominated_by_six_n_per_token() -> None:
    model = VAR.from_preset("var_demo")
    length = model.scales.total_tokens
    flops = training_flops_per_sample(model, length)
    linear = sum(
        m.in_features * m.out_features
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "adaln" not in n and "head_norm" not in n
    )
    assert 6 * linear * length <= flops <= 6 * linear * length * 1.5


# -- EMA ----------------------------------------------------------------------------------------------------------
class _FakeTrainer:
    def __init__(self) -> None:
        self.global_step = 0


def test_ema_update_matches_closed_form_and_round_trips(tokenizer: torch.nn.Module) -> None:
    module = _module(tokenizer)
    trainer = _FakeTrainer()
    ema = EMA(decay=0.9, warmup=False)
    ema.on_fit_start(trainer, module)  # type: ignore[arg-type]
    start = module.model.head.weight.detach().clone()
    values = []
    for step in range(1, 4):
        with torch.no_grad():
            module.model.head.weight.add_(1.0)
        values.append(module.model.head.weight.detach().clone())
        trainer.global_step = step
        ema.on_train_batch_end(trainer, module)  # type: ignore[arg-type]
    expected = start
    for value in values:
        expected = 0.9 * expected + 0.1 * value
    torch.testing.assert_close(ema.shadow["head.weight"], expected)
    ema.on_train_batch_end(trainer, module)  # no optimiser step (accumulation): no update
    torch.testing.assert_close(ema.shadow["head.weight"], expected)

    restored = EMA(decay=0.9, warmup=False)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 3
    current = module.model.head.weight.detach().clone()
    with restored.swapped(module):  # type: ignore[arg-type]
        torch.testing.assert_close(module.model.head.weight, expected)
    torch.testing.assert_close(module.model.head.weight, current)


def test_ema_warmup_decay() -> None:
    ema = EMA(decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.updates = 10_000
    assert ema.current_decay() == pytest.approx(0.999)


# -- outputs ------------------------------------------------------------------------------------------------------
def test_grid_layout_is_row_major() -> None:
    images = np.stack([np.full((4, 4, 3), i * 20, np.uint8) for i in range(6)])
    grid = make_grid(images, columns=3, padding=1)
    assert grid.shape == (2 * 4 + 3, 3 * 4 + 4, 3)
    assert grid[1, 1, 0] == 0 and grid[1, 6, 0] == 20 and grid[6, 1, 0] == 60  # (row 0, col 0), (0, 1), (1, 0)


def test_npz_refuses_non_adm_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ADM"):
        save_npz(np.zeros((2, 3, 8, 8), np.uint8), tmp_path / "x.npz")
    path = save_npz(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "x.npz")
    assert np.load(path)["arr_0"].shape == (2, 8, 8, 3)
