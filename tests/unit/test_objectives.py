"""Training objectives: the registry, the CCA loss against a direct computation, the frozen reference model."""

from __future__ import annotations

import math

import pytest
import torch

from varkit.lit.var_module import VARModule
from varkit.models.var import VAR
from varkit.models.vqvae import vqvae_preset
from varkit.objectives import ConditionContrastiveAlignment, ObjectiveBatch
from varkit.registry import OBJECTIVES, UnknownComponentError


@pytest.fixture(scope="module")
def tokenizer() -> torch.nn.Module:
    torch.manual_seed(0)
    return vqvae_preset("vqvae_tiny").eval().requires_grad_(False)


def _arguments(tokenizer: torch.nn.Module, **overrides: object) -> dict:
    from varkit.models.factory import model_arguments
    from varkit.models.var_presets import var_preset

    return model_arguments({**var_preset("var_tiny"), **overrides}, tokenizer, "eager")


def _batch(module: VARModule, tokenizer: torch.nn.Module, labels: list[int], seed: int = 3) -> ObjectiveBatch:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 64, (len(labels), module.scales.total_tokens), generator=generator)
    targets, inputs = module.teacher_forcing(module.token_maps(tokens))
    return ObjectiveBatch(
        labels=torch.tensor(labels),
        targets=targets,
        inputs=inputs,
        token_weights=torch.full((targets.shape[1],), 1.0 / targets.shape[1]),
        null_class=10,
    )


def _log_likelihoods_by_hand(model: VAR, labels: list[int], inputs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per sample ``sum_t (z_t[x_t] - logsumexp z_t)`` with the given labels (its own forward), in float64."""
    with torch.no_grad():
        logits = model(torch.tensor(labels), inputs).double()
    values = []
    for row, target in zip(logits, targets):
        picked = row[torch.arange(len(target)), target]
        values.append(float((picked - torch.logsumexp(row, dim=-1)).sum()))
    return values


def _log_sigmoid(value: float) -> float:
    return -math.log1p(math.exp(-value)) if value >= 0 else value - math.log1p(math.exp(value))


def test_registry_lists_the_objectives_and_names_the_known_ones() -> None:
    assert {"next_scale_ce", "cca"} <= set(OBJECTIVES.names())
    with pytest.raises(UnknownComponentError, match="cca, next_scale_ce"):
        OBJECTIVES.get("ccaa_typo")
    with pytest.raises(TypeError, match="beta"):
        OBJECTIVES.build({"name": "cca", "betta": 0.1})


@pytest.mark.parametrize("uncond_ratio", [0.0, 0.4])
def test_cca_loss_equals_a_direct_computation(tokenizer: torch.nn.Module, uncond_ratio: float) -> None:
    torch.manual_seed(0)
    policy = VAR.from_config(_arguments(tokenizer, class_dropout=0.0)).eval()
    torch.manual_seed(1)
    reference = VAR.from_config(_arguments(tokenizer, class_dropout=0.0)).eval()
    module = VARModule(_arguments(tokenizer), tokenizer=tokenizer)
    labels = [3, 3, 7, 1, 9]  # samples 0 and 1 share a class: under uncond_ratio that negative counts as positive
    batch = _batch(module, tokenizer, labels)
    objective = ConditionContrastiveAlignment(beta=0.7, lambda_=4.0, uncond_ratio=uncond_ratio)
    if uncond_ratio:
        batch = ObjectiveBatch(**{**batch.__dict__, "generator": torch.Generator().manual_seed(11)})
    output = objective(policy, batch, reference)

    # by hand: the negative of sample i is the class of sample i + 1; masked pairs use the null class 10
    size = len(labels)
    masked = [False] * size
    if uncond_ratio:
        masked = (torch.rand(size, generator=torch.Generator().manual_seed(11)) < uncond_ratio).tolist()
        assert any(masked) and not all(masked)
    positive_labels = [10 if masked[i] else labels[i] for i in range(size)]
    negative_labels = [10 if masked[i] else labels[(i + 1) % size] for i in range(size)]
    ratios = {}
    for kind, chosen in (("positive", positive_labels), ("negative", negative_labels)):
        ours = _log_likelihoods_by_hand(policy, chosen, batch.inputs, batch.targets)
        theirs = _log_likelihoods_by_hand(reference, chosen, batch.inputs, batch.targets)
        ratios[kind] = [a - b for a, b in zip(ours, theirs)]
    positive_term, negative_term = 0.0, 0.0
    for i in range(size):
        positive_term += -_log_sigmoid(0.7 * ratios["positive"][i]) / size
        if uncond_ratio and (masked[i] or negative_labels[i] == positive_labels[i]):
            negative_term += -_log_sigmoid(0.7 * ratios["negative"][i]) / size  # a positive pair, weight 1
        else:
            negative_term += -4.0 * _log_sigmoid(-0.7 * ratios["negative"][i]) / size
    expected = positive_term + negative_term
    if uncond_ratio:
        expected /= 4.0
    assert abs(output.loss.item() - expected) < 1e-4 * max(1.0, abs(expected))
    assert output.logits.shape == (size, module.scales.total_tokens, 64)


def test_cca_gradients_reach_the_policy_only(tokenizer: torch.nn.Module) -> None:
    module = VARModule(_arguments(tokenizer), tokenizer=tokenizer, objective={"name": "cca", "beta": 0.5})
    batch = _batch(module, tokenizer, [0, 1, 2, 3])
    with torch.no_grad():  # move the policy away from the reference so that the ratios are not all zero
        for parameter in module.model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    output = module.objective(module.model, batch, module.reference)
    output.loss.backward()
    assert all(p.grad is not None for p in module.model.parameters() if p.requires_grad)
    assert all(p.grad is None and not p.requires_grad for p in module.reference.parameters())


def test_reference_is_frozen_and_outside_parameters_state_dict_and_optimizer(tokenizer: torch.nn.Module) -> None:
    module = VARModule(
        _arguments(tokenizer, class_dropout=0.1),
        optim={"lr": 1e-3, "total_steps": 10},
        tokenizer=tokenizer,
        objective={"name": "cca"},
    )
    reference = module.reference
    assert reference is not None
    assert not any(p.requires_grad for p in reference.parameters())
    model_ids = {id(p) for p in module.model.parameters()}
    reference_ids = {id(p) for p in reference.parameters()}
    assert not model_ids & reference_ids
    assert {id(p) for p in module.parameters()} == model_ids  # not a registered sub-module
    assert all(k.startswith("model.") for k in module.state_dict())
    assert len(module.state_dict()) == len(module.model.state_dict())
    optimizer = module.configure_optimizers()["optimizer"]
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert grouped <= model_ids and not grouped & reference_ids
    # the initial weights, without the class dropout (the objective builds its own pairs)
    assert all(torch.equal(a, b) for a, b in zip(module.model.state_dict().values(), reference.state_dict().values()))
    assert module.model.class_dropout == 0.0 and reference.class_dropout == 0.0


def test_next_scale_ce_needs_no_reference(tokenizer: torch.nn.Module) -> None:
    module = VARModule(_arguments(tokenizer, class_dropout=0.1), tokenizer=tokenizer)
    assert module.reference is None
    assert module.model.class_dropout == 0.1
    assert module.hparams["objective"] == {"name": "next_scale_ce"}


def test_bad_cca_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="beta"):
        ConditionContrastiveAlignment(beta=0.0)
    with pytest.raises(ValueError, match="uncond_ratio"):
        ConditionContrastiveAlignment(uncond_ratio=1.0)
