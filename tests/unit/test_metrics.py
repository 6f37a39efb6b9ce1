"""Sample-quality metrics against closed forms, scipy and naive re-implementations; feature extractors; npz files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from varkit.evaluation import metrics as M
from varkit.evaluation.extractors import build_extractor
from varkit.evaluation.features import FEATURE_EXTRACTORS, ChecksumError, resize_bilinear_tf1
from varkit.evaluation.inception import InceptionV3FID, fid_inception_key_map, load_fid_inception
from varkit.evaluation.npz import load_reference_npz, load_samples_npz, save_reference_npz, save_samples_npz
from varkit.evaluation.runner import MetricSettings, compute_metrics
from varkit.evaluation.shard_images import adm_center_crop, image_batches
from varkit.evaluation.stats import reference_from_features, reference_from_npz, reference_from_shards
from varkit.evaluation.tiny import TinyExtractor

scipy_linalg = pytest.importorskip("scipy.linalg")


def _spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d + (0.0 if rank else 0.1) * np.eye(d)


def _fid_scipy(mu1, s1, mu2, s2) -> float:
    root = scipy_linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


# -- FID ------------------------------------------------------------------------------------------------------------


def test_fid_of_identical_sets_is_zero() -> None:
    features = np.random.default_rng(0).normal(size=(300, 16)) * 3 + 1
    stats = M.gaussian_statistics(features)
    assert M.frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("d", [2, 8, 64])
def test_fid_matches_closed_form_with_scipy_sqrtm(d: int) -> None:
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    expected = _fid_scipy(mu1, s1, mu2, s2)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert M.trace_sqrt_product(s1, s2) == pytest.approx(np.trace(scipy_linalg.sqrtm(s1 @ s2)).real, rel=1e-9)


def test_fid_one_dimensional_and_diagonal_closed_forms() -> None:
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s1, s2
    assert M.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # commuting (diagonal) covariances: sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert M.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(expected)


def test_fid_is_robust_to_singular_covariances() -> None:
    # fewer samples than dimensions: rank-deficient covariances, where sqrtm of the product is ill-conditioned
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.5
    value = M.frechet_distance(*M.gaussian_statistics(x), *M.gaussian_statistics(y))
    expected = _fid_scipy(*M.gaussian_statistics(x), *M.gaussian_statistics(y))
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(expected, rel=1e-5)


def test_fid_estimates_the_distance_between_sampled_gaussians() -> None:
    rng = np.random.default_rng(2)
    d = 4
    mu1, mu2, s1, s2 = rng.normal(size=d), rng.normal(size=d), _spd(rng, d), _spd(rng, d)
    x = rng.multivariate_normal(mu1, s1, size=40_000)
    y = rng.multivariate_normal(mu2, s2, size=40_000)
    estimate = M.frechet_distance(*M.gaussian_statistics(x), *M.gaussian_statistics(y))
    assert estimate == pytest.approx(_fid_scipy(mu1, s1, mu2, s2), rel=0.05)


def test_fid_refuses_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match="same feature extractor"):
        M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# -- IS --------------------------------------------------------------------------------------------------------------


def _naive_inception_score(logits: np.ndarray, splits: int) -> tuple[float, float]:
    scores = []
    for part in np.array_split(logits, splits):
        probs = [np.exp(row - row.max()) / np.exp(row - row.max()).sum() for row in part]
        marginal = [sum(p[c] for p in probs) / len(probs) for c in range(part.shape[1])]
        kl = [sum(p[c] * (np.log(p[c]) - np.log(marginal[c])) for c in range(part.shape[1])) for p in probs]
        scores.append(np.exp(sum(kl) / len(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_matches_naive_formula() -> None:
    logits = np.random.default_rng(3).normal(size=(60, 7)) * 3
    score = M.inception_score(logits, splits=3)
    expected = _naive_inception_score(logits, 3)
    assert score.mean == pytest.approx(expected[0], rel=1e-10)
    assert score.std == pytest.approx(expected[1], rel=1e-8, abs=1e-12)


def test_inception_score_extremes() -> None:
    # uniform predictions: 1; confident predictions spread evenly over k classes: k
    assert M.inception_score(np.zeros((10, 5)), splits=1).mean == pytest.approx(1.0)
    confident = np.eye(4)[np.arange(40) % 4] * 60.0
    assert M.inception_score(confident, splits=2).mean == pytest.approx(4.0, rel=1e-6)


# -- KID -------------------------------------------------------------------------------------------------------------


def _naive_mmd(x: np.ndarray, y: np.ndarray) -> float:
    d, m = x.shape[1], x.shape[0]

    def k(a, b):
        return (float(a @ b) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_naive_unbiased_mmd() -> None:
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(30, 5)), rng.normal(size=(25, 5)) + 0.3
    kid = M.kernel_inception_distance(real, fake, subsets=3, subset_size=12, seed=7)
    draws = np.random.default_rng(7)
    values = []
    for _ in range(3):
        x = real[draws.choice(30, 12, replace=False)]
        y = fake[draws.choice(25, 12, replace=False)]
        values.append(_naive_mmd(x, y))
    assert kid.mean == pytest.approx(np.mean(values), rel=1e-10)
    assert kid.std == pytest.approx(np.std(values), rel=1e-8)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two() -> None:
    rng = np.random.default_rng(5)
    real = rng.normal(size=(400, 8))
    same = M.kernel_inception_distance(real, rng.normal(size=(400, 8)), subsets=20, subset_size=200)
    shifted = M.kernel_inception_distance(real, rng.normal(size=(400, 8)) + 1.0, subsets=20, subset_size=200)
    assert abs(same.mean) < 0.02 < shifted.mean


# -- precision / recall -------------------------------------------------------------------------------------------


def test_knn_radii_match_brute_force() -> None:
    points = np.random.default_rng(6).normal(size=(50, 3))
    distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    expected = np.sort(distances, axis=1)[:, 3]  # column 0 is the point itself
    np.testing.assert_allclose(M.knn_radii(points, k=3, batch_size=16), expected, rtol=1e-12)


def test_precision_recall_on_a_constructed_case() -> None:
    # real: 10 points on a line at 0..9. With k=3 the radii are 3 at the ends, 2 inside.
    real = np.stack([np.arange(10.0), np.zeros(10)], axis=1)
    np.testing.assert_allclose(M.knn_radii(real, k=3), [3, 2, 2, 2, 2, 2, 2, 2, 2, 3])
    # fake: 5 points just above 0..4; radii (k=3) 3, 2, 2, 2, 3. All lie in real balls: precision 1. Real points
    # covered: x <= 2.958 by the ball of (0, .5), |x - 4| <= 2.958 by that of (4, .5) -> 0..6: recall 7/10.
    fake = np.stack([np.arange(5.0), np.full(5, 0.5)], axis=1)
    np.testing.assert_allclose(M.knn_radii(fake, k=3), [3, 2, 2, 2, 3])
    assert M.precision_recall(real, fake, k=3) == (pytest.approx(1.0), pytest.approx(0.7))
    # one far outlier: outside every real ball (precision 5/6), but its own huge k-NN ball covers every real
    # point (recall 1) - the known outlier sensitivity of k-NN manifolds (Kynkaanniemi et al. 2019, §5)
    with_outlier = np.concatenate([fake, [[50.0, 0.0]]])
    assert M.precision_recall(real, with_outlier, k=3) == (pytest.approx(5 / 6), pytest.approx(1.0))


def test_precision_recall_identical_and_disjoint_sets() -> None:
    real = np.random.default_rng(7).normal(size=(40, 4))
    assert M.precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    assert M.precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


# -- compute_metrics ----------------------------------------------------------------------------------------------


def test_compute_metrics_reports_every_figure_and_notes_missing_features() -> None:
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(50, 6)), rng.normal(size=(40, 6))
    logits = rng.normal(size=(40, 5))
    reference = reference_from_features(real, extractor="x", source="test")
    settings = MetricSettings(kid_subsets=5, kid_subset_size=20)
    result = compute_metrics(fake, logits, reference, settings)
    assert result["fid"] == pytest.approx(
        M.frechet_distance(*M.gaussian_statistics(fake), reference.mu, reference.sigma)
    )
    assert result["inception_score"] == pytest.approx(M.inception_score(logits, splits=10).mean)
    assert result["kid"] is not None and 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    stats_only = reference_from_features(real, extractor="x", source="test")
    stats_only.features = None
    partial = compute_metrics(fake, logits, stats_only, settings)
    assert partial["kid"] is None and partial["precision"] is None and partial["notes"]
    with pytest.raises(ValueError, match="different feature extractors"):
        compute_metrics(fake[:, :5], logits, reference, settings)


# -- feature extractors -----------------------------------------------------------------------------------------------


def test_tf1_bilinear_resize_matches_a_naive_loop() -> None:
    image = torch.rand(1, 2, 5, 7, dtype=torch.float64)
    out = resize_bilinear_tf1(image, 9)
    expected = torch.empty(1, 2, 9, 9, dtype=torch.float64)
    for i in range(9):
        for j in range(9):
            y, x = i * 5 / 9, j * 7 / 9
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
            dy, dx = y - y0, x - x0
            top = image[..., y0, x0] * (1 - dx) + image[..., y0, x1] * dx
            bottom = image[..., y1, x0] * (1 - dx) + image[..., y1, x1] * dx
            expected[..., i, j] = top * (1 - dy) + bottom * dy
    torch.testing.assert_close(out, expected)


def test_fid_inception_layout_matches_the_official_file() -> None:
    model = InceptionV3FID()
    # torchvision's inception_v3 without the auxiliary head has 23,834,568 parameters; the FID variant's
    # classifier has 1008 classes instead of 1000: + 2048 * 8 + 8
    assert sum(p.numel() for p in model.parameters()) == 23_834_568 + 2048 * 8 + 8
    mapping = fid_inception_key_map()
    ours = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(mapping) == 94 * 5 + 2 and set(mapping.values()) == set(ours)
    known_official_shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
        "fc.weight": (1008, 2048),
    }
    for key, shape in known_official_shapes.items():
        assert tuple(ours[mapping[key]]) == shape, key


@pytest.fixture(scope="module")
def official_inception_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, InceptionV3FID]:
    """A file in the official key layout (random weights), as pytorch-fid's release would be laid out."""
    torch.manual_seed(0)
    source = InceptionV3FID().eval()
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    inverse = {ours: theirs for theirs, ours in fid_inception_key_map().items()}
    state = {inverse[k]: v for k, v in source.state_dict().items() if k in inverse}
    path = tmp_path_factory.mktemp("weights") / "pt_inception-fake.pth"
    torch.save(state, path)
    return path, source


def test_fid_inception_loads_official_keys_and_checks_the_checksum(official_inception_file) -> None:
    path, source = official_inception_file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError, match="expected"):
        load_fid_inception(path)  # the default checksum is the real file's
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_fid_inception(path.with_name("absent.pth"))
    model = load_fid_inception(path, sha256=digest)
    assert digest in model.fingerprint
    # 80 px inputs (the smallest this network takes is 75) keep the test fast: skip the resize to 299
    model.input_size = 80
    images = torch.randint(0, 256, (1, 3, 80, 80), dtype=torch.uint8)
    out = model(images)
    assert out.pool.shape == (1, 2048) and out.logits.shape == (1, 1008)
    expected_pool = source.pool_features((images.float() - 128) / 128)
    torch.testing.assert_close(out.pool, expected_pool)
    torch.testing.assert_close(out.logits, expected_pool @ source.classifier.weight.T)
    # the registry builds it from config keys
    assert isinstance(
        FEATURE_EXTRACTORS.build({"name": "inception_fid", "weights": str(path), "sha256": None}), InceptionV3FID
    )


def test_tiny_extractor_is_seeded_and_fingerprinted() -> None:
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    a, b = build_extractor({"name": "tiny", "seed": 1}), build_extractor({"name": "tiny", "seed": 1})
    c = TinyExtractor(seed=2)
    torch.testing.assert_close(a(images).pool, b(images).pool)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not torch.allclose(a(images).pool, c(images).pool)
    assert a(images).pool.shape == (3, 64) and a(images).logits.shape == (3, 10)
    with pytest.raises(ValueError, match="uint8"):
        a(images.float())


# -- npz and reference statistics ----------------------------------------------------------------------------------


def test_samples_npz_round_trip_in_adm_layout(tmp_path: Path) -> None:
    images = np.random.default_rng(9).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    path = save_samples_npz(tmp_path / "samples.npz", images)
    with np.load(path) as data:
        assert list(data.keys()) == ["arr_0"] and data["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(load_samples_npz(path), images)
    with pytest.raises(ValueError, match="uint8"):
        save_samples_npz(tmp_path / "bad.npz", images.astype(np.float32))


def test_reference_npz_round_trip_and_adm_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    features = rng.normal(size=(20, 4))
    mu, sigma = M.gaussian_statistics(features)
    path = save_reference_npz(tmp_path / "ref.npz", mu=mu, sigma=sigma, features=features, extractor="tiny:x")
    batch = load_reference_npz(path)
    np.testing.assert_array_equal(batch.mu, mu)
    np.testing.assert_array_equal(batch.sigma, sigma)
    np.testing.assert_allclose(batch.features, features.astype(np.float32))
    assert batch.extractor == "tiny:x" and batch.images is None
    # an ADM reference batch: arr_0 images + mu/sigma, no varkit keys
    adm = tmp_path / "adm.npz"
    np.savez(adm, arr_0=rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8), mu=mu, sigma=sigma)
    loaded = load_reference_npz(adm)
    assert loaded.extractor is None and loaded.features is None and loaded.images.shape == (6, 8, 8, 3)


def test_reference_from_npz_uses_matching_stats_and_recomputes_otherwise(tmp_path: Path) -> None:
    extractor = TinyExtractor(feature_dim=4)
    images = np.random.default_rng(11).integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    pool = torch.cat([extractor(b).pool for b in image_batches(iter(images), 5)]).double().numpy()
    # ADM file (TF Inception statistics, no fingerprint): not usable with `tiny`, so recomputed from arr_0
    adm = tmp_path / "adm.npz"
    np.savez(adm, arr_0=images, mu=np.zeros(4), sigma=np.eye(4))
    reference = reference_from_npz(adm, extractor)
    np.testing.assert_allclose(reference.mu, pool.mean(0), rtol=1e-5)
    assert reference.features is not None and reference.extractor == extractor.fingerprint
    # a varkit file of the same extractor: its statistics are used as stored
    own = save_reference_npz(tmp_path / "own.npz", mu=np.ones(4), sigma=np.eye(4), extractor=extractor.fingerprint)
    np.testing.assert_array_equal(reference_from_npz(own, extractor).mu, np.ones(4))
    # statistics of another extractor and no images: refused
    other = save_reference_npz(tmp_path / "other.npz", mu=np.ones(4), sigma=np.eye(4), extractor="tiny:other")
    with pytest.raises(ValueError, match="no images"):
        reference_from_npz(other, extractor)


def test_adm_center_crop() -> None:
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(12).integers(0, 256, size=(100, 60, 3), dtype=np.uint8))
    out = adm_center_crop(image, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def _write_shards(directory: Path, count: int) -> list[str]:
    import io

    from PIL import Image

    from varkit.data.shards import ShardWriter

    rng = np.random.default_rng(13)
    with ShardWriter(directory, max_count=max(count // 2, 1)) as writer:
        for i in range(count):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)).save(buffer, format="PNG")
            writer.write(f"{i:06d}", {"png": buffer.getvalue(), "cls": str(i % 3).encode()})
    return [str(p) for p in writer.paths]


def test_reference_from_shards_is_cached_by_shards_and_extractor(tmp_path: Path, monkeypatch) -> None:
    urls = _write_shards(tmp_path / "shards", 10)
    extractor = TinyExtractor(feature_dim=8)
    first = reference_from_shards(urls, extractor, image_size=16, cache_dir=tmp_path / "cache", batch_size=4)
    assert first.num_images == 10 and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    from varkit.evaluation import stats

    def fail(*args, **kwargs):
        raise AssertionError("features recomputed despite a cache hit")

    monkeypatch.setattr(stats, "extract_all", fail)
    second = reference_from_shards(urls, extractor, image_size=16, cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(second.mu, first.mu)
    np.testing.assert_allclose(second.features, first.features, rtol=1e-6)
    # another extractor (or changed shards) is another key: recomputed, so the stub fails
    with pytest.raises(AssertionError, match="recomputed"):
        reference_from_shards(urls, TinyExtractor(feature_dim=8, seed=3), image_size=16, cache_dir=tmp_path / "cache")


@pytest.mark.gpu
def test_metrics_and_features_on_cuda_match_cpu() -> None:
    rng = np.random.default_rng(14)
    real, fake = rng.normal(size=(300, 16)), rng.normal(size=(200, 16)) + 0.2
    assert M.precision_recall(real, fake, device="cuda") == M.precision_recall(real, fake)
    extractor = TinyExtractor()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    from varkit.evaluation.features import extract_features

    cpu_pool, _ = extract_features(extractor, [images])
    gpu_pool, _ = extract_features(extractor.to("cuda"), [images], device="cuda")
    torch.testing.assert_close(gpu_pool, cpu_pool, rtol=1e-4, atol=1e-4)
