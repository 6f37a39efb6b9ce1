"""Benchmark: the speed / quality matrix of varkit's training-free sampling speed-ups (varkit.sampling).

Rows: the exact sampler, each speed-up alone, the best stack (``conf/sampling/fast.yaml``) and, with
``VAR_REF_DIR`` set to a checkout of the reference implementation (github FoundationVision/VAR; never copied into
this repository), the reference itself. Columns:

* ``s/img bN``: seconds per image at VAR-d16 shape (random weights, fp32, 2 threads, guidance cfg 1.5 on the
  linear ramp, top-k 900 / top-p 0.96, 256 px decode included), batch N; all rows of one batch size run
  round-robin in one process (median of ``--reps``), so machine noise hits them alike; ``x ref`` = the median
  over repetitions of reference time / row time within the same repetition (paired, so slow drifts of a shared
  machine cancel; the JSON also holds the range);
* ``KV MiB``: KV-cache bytes allocated for one batch-1 call (``GenerationOutput.stats``);
* ``peak MiB``: peak resident memory of a separate process that builds the models and samples one batch 1 image
  (model weights included, so differences are what matters);
* ``FID`` / ``class acc``: quality on the trained quickstart model (``--quality-root``, default
  ``/work/artifacts/quickstart``): FID with the ``tiny_demo`` evaluator against the demo validation shards, and the
  fraction of samples whose ``tiny_demo`` classifier prediction is the requested class (its accuracy on the real
  validation images is printed as the ceiling); the spread between seeds of the exact sampler is printed as noise.
  ``draft_refine`` rows need ``--refiner DIR``: an exported smaller transformer trained on the same tokenizer (e.g.
  ``varkit train experiment=quickstart model.depth=3 name=var-d3 ...``), which then refines the finest scales.

    python benchmarks/speedups.py                               # speed (batch 1) + quality
    python benchmarks/speedups.py --batch 1 16 --reps 3         # both batch sizes
    VAR_REF_DIR=/work/ref/VAR python benchmarks/speedups.py --parts speed
    python benchmarks/speedups.py --parts quality --per-class 40 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

# speed-up settings at VAR-d16 shape (10 scales, 16 blocks); the quickstart model has its own depth and scales,
# and the negative indices make the same settings meaningful there
ROWS: dict[str, list[dict[str, Any]]] = {
    "exact": [],
    "token_pruning": [{"name": "token_pruning", "scales": [-2, -1], "from_block": 4, "ratio": 0.5}],
    "guidance_cutoff": [{"name": "guidance_cutoff", "from_scale": -1}],
    "kv_budget": [{"name": "kv_budget", "budget": 128, "from_scale": -4}],
    "draft_refine": [{"name": "draft_refine", "model": "<half depth>", "switch_scale": -2}],
    "early_stop": [{"name": "early_stop", "scale": -2}],
}


def fast_stack(option: str = "fast") -> list[dict[str, Any]]:
    """The speed-ups of ``conf/sampling/<option>.yaml`` (``fast``: the README's best stack; ``fast_draft``: the
    same with a smaller refiner, whose required ``model`` becomes the benchmark's refiner)."""
    import yaml

    path = Path(__file__).resolve().parents[1] / "conf" / "sampling" / f"{option}.yaml"
    specs = list(yaml.safe_load(path.read_text())["speedups"])
    return [{**s, "model": "<half depth>"} if s["name"] == "draft_refine" else s for s in specs]


_ONLY: list[str] = []  # --rows: limit the rows (the speed part; "reference" is kept when VAR_REF_DIR is set)
_EXTRA: dict[str, list[dict[str, Any]]] = {}  # --extra-row NAME JSON: candidate stacks measured beside the others
_BACKENDS: dict[str, str] = {}  # row name -> CPU linear backend for that row only (--extra-row with a JSON object)


def _rows() -> dict[str, list[dict[str, Any]]]:
    rows = {**ROWS, "fast (stack)": fast_stack(), "fast_draft (stack)": fast_stack("fast_draft"), **_EXTRA}
    return {name: specs for name, specs in rows.items() if not _ONLY or name in _ONLY}


def _resolve(specs: list[dict[str, Any]], refiner: Any) -> list[dict[str, Any]]:
    return [{**s, "model": refiner} if s["name"] == "draft_refine" else s for s in specs]


def _sampling(specs: list[dict[str, Any]], refiner: Any, **options: Any) -> Any:
    from varkit.sampling import SamplingConfig

    return SamplingConfig.from_config(
        {"cfg": 1.5, "top_k": 900, "top_p": 0.96, **options, "speedups": _resolve(specs, refiner)}
    )


# -- speed -------------------------------------------------------------------------------------------------------
def _d16(depth: int = 16) -> tuple[Any, Any, Any]:
    import varkit  # noqa: F401
    from varkit.models.var import VAR
    from varkit.models.var_presets import official_shape
    from varkit.models.vqvae import vqvae_preset

    torch.manual_seed(0)
    var = VAR(**{**official_shape(depth), "drop_path": 0.0, "class_dropout": 0.0}).eval()
    refiner = VAR(**{**official_shape(depth // 2), "drop_path": 0.0, "class_dropout": 0.0}).eval()
    vqvae = vqvae_preset("vqvae_f16").eval()
    vqvae.decoder_to(torch.float32)
    return var, refiner, vqvae


def _reference(depth: int) -> Any:
    """The reference's sampler (fp32, no fused kernels), from VAR_REF_DIR; None when unset."""
    root = os.environ.get("VAR_REF_DIR")
    if not root:
        return None
    sys.path.insert(0, root)
    try:
        from models.var import VAR as ReferenceVAR  # type: ignore[import-not-found]
        from models.vqvae import VQVAE as ReferenceVQVAE  # type: ignore[import-not-found]
    finally:
        sys.path.remove(root)
    patches = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    torch.manual_seed(0)
    vae = ReferenceVQVAE(
        vocab_size=4096, z_channels=32, ch=160, test_mode=True, share_quant_resi=4, v_patch_nums=patches
    )
    model = ReferenceVAR(
        vae_local=vae, num_classes=1000, depth=depth, embed_dim=depth * 64, num_heads=depth, drop_path_rate=0.0,
        shared_aln=False, cond_drop_rate=0.1, attn_l2_norm=True, patch_nums=patches, flash_if_available=False,
        fused_if_available=False,
    )  # fmt: skip
    model.init_weights(init_std=-1)
    return model.eval()


def speed(depth: int, batches: list[int], reps: int, threads: int, clock: str) -> dict[str, dict[str, Any]]:
    from varkit.models.var import sample_images
    from varkit.nn.cpu_linear import cpu_linear_backend, set_cpu_linear_backend

    default_backend = cpu_linear_backend()
    torch.set_num_threads(threads)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    var, refiner, vqvae = _d16(depth)
    reference = _reference(depth)
    rows = _rows()
    results: dict[str, dict[str, Any]] = {name: {} for name in ([*rows, "reference"] if reference else rows)}
    specs = {name: _sampling(r, refiner) for name, r in rows.items()}
    for batch in batches:
        labels = torch.arange(batch) * 37 % 1000

        def once(name: str, seed: int, batch: int = batch, labels: torch.Tensor = labels) -> float:
            set_cpu_linear_backend(_BACKENDS.get(name, default_backend))
            start = timer()
            generator = torch.Generator().manual_seed(seed)
            with torch.inference_mode():
                if name == "reference":
                    reference.autoregressive_infer_cfg(
                        B=batch, label_B=labels, g_seed=seed, cfg=1.5, top_k=900, top_p=0.96
                    )
                else:
                    sample_images(var, vqvae, labels, sampling=specs[name], generator=generator)
            return timer() - start

        times: dict[str, list[float]] = {name: [] for name in results}
        warm = ["reference", "exact", *(n for n in _BACKENDS if n in results)]
        for name in [n for n in dict.fromkeys(warm) if n in results]:
            once(name, 0)  # warm-up (allocator, oneDNN primitives, packed weights); speed-up rows share exact's shapes
        for rep in range(reps):  # round-robin: every row sees the same machine load
            for name in results:
                times[name].append(once(name, rep + 1))
                print(f"  b{batch} {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
        for name in results:
            results[name][f"s/img b{batch}"] = statistics.median(times[name]) / batch
            if "reference" in times:  # paired: each repetition's rows ran back to back, so load drifts cancel
                ratios = [r / t for r, t in zip(times["reference"], times[name])]
                results[name][f"x ref b{batch}"] = statistics.median(ratios)
                results[name][f"x ref range b{batch}"] = [min(ratios), max(ratios)]
    labels = torch.tensor([3])
    for name, spec in specs.items():
        kwargs = spec.generate_kwargs()
        with torch.inference_mode():
            out = var.generate(labels, vqvae.quantizer, generator=torch.Generator().manual_seed(0), **kwargs)
        results[name]["KV MiB"] = out.stats["kv_cache_bytes"] / 2**20
    return results


def peak_memory(depth: int) -> dict[str, float]:
    """Peak RSS (MiB) of one process per row sampling one batch-1 image."""
    peaks = {}
    for name in _rows():
        cmd = [sys.executable, __file__, "--child-peak", name, "--depth", str(depth)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("PEAK ")]
        peaks[name] = float(lines[-1].split()[1]) if lines else float("nan")
    return peaks


def _child_peak(name: str, depth: int) -> None:
    from varkit.models.var import sample_images

    torch.set_num_threads(2)
    var, refiner, vqvae = _d16(depth)
    spec = _sampling(_rows()[name], refiner)
    with torch.inference_mode():
        sample_images(var, vqvae, torch.tensor([3]), sampling=spec, generator=torch.Generator().manual_seed(0))
    print(f"PEAK {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


# -- quality -----------------------------------------------------------------------------------------------------
def _quickstart_generator(root: Path, checkpoint: Path | None) -> tuple[Any, Any]:
    """The quickstart's exported generator, or the EMA weights of a training checkpoint of it (``checkpoint``)."""
    from varkit.checkpoint.generator import load_generator
    from varkit.checkpoint.tokenizer_source import load_tokenizer
    from varkit.models.var import VAR

    if checkpoint is None:
        var, vqvae, _ = load_generator(root / "runs" / "var-demo" / "model")
        return var, vqvae
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    var = VAR.from_config(state["hyper_parameters"]["model"])
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    weights.update(state["callbacks"]["EMA"]["shadow"])  # sample with the average, as the export does
    var.load_state_dict(weights)
    return var.eval(), load_tokenizer(root / "runs" / "tokenizer-demo" / "tokenizer")


def quality(
    root: Path,
    per_class: int,
    seeds: list[int],
    batch_size: int,
    checkpoint: Path | None = None,
    refiner_dir: Path | None = None,
) -> tuple[dict[str, dict[str, Any]], str]:
    """FID (tiny_demo) and class accuracy per row on the trained quickstart model; returns rows and a noise note."""
    import numpy as np

    import varkit.evaluation  # noqa: F401  (registers the feature extractors)
    from varkit.data.shards import expand_urls
    from varkit.evaluation.extractors import build_extractor
    from varkit.evaluation.features import extract_features
    from varkit.evaluation.metrics import frechet_distance, gaussian_statistics
    from varkit.evaluation.samples import class_labels, generate_samples
    from varkit.evaluation.shard_images import image_batches, iter_shard_samples
    from varkit.evaluation.stats import reference_from_shards

    torch.set_num_threads(2)
    var, vqvae = _quickstart_generator(root, checkpoint)
    vqvae.decoder_to(torch.float32)
    refiner = None
    if refiner_dir is not None:  # a smaller transformer trained on the same tokenizer, for draft_refine rows
        from varkit.checkpoint.generator import load_generator

        refiner, _, _ = load_generator(refiner_dir)
        refiner.eval()
    extractor = build_extractor({"name": "tiny", "fit_on": str(root / "data" / "demo" / "train")}).eval()
    size = int(vqvae.image_size[0])
    val = sorted(str(p) for p in (root / "data" / "demo" / "val").glob("*.tar"))
    val = [u for u in expand_urls(val) if Path(u).is_file()]
    reference = reference_from_shards(val, extractor, image_size=size, batch_size=64, device="cpu")

    def score(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pool features, predicted classes) of uint8 NHWC images."""
        batches = image_batches(list(images), 64)
        pool, logits = extract_features(extractor, batches)
        return pool.numpy(), logits.argmax(dim=-1).numpy()

    # the ceiling: the classifier on the real validation images
    samples = list(iter_shard_samples(val, size))
    _, predicted = score(np.stack([image for image, _ in samples]))
    truth = np.asarray([label for _, label in samples])
    ceiling = float((predicted == truth).mean())

    labels = class_labels(list(range(int(var.num_classes))), per_class)
    results: dict[str, dict[str, Any]] = {}
    for name, specs in _rows().items():
        if refiner is None and any(s["name"] == "draft_refine" for s in specs):
            results[name] = {"FID": None, "class acc": None}
            continue
        fids, accuracies = [], []
        for seed in seeds:
            spec = _sampling(specs, refiner)
            images, _ = generate_samples(var, vqvae, labels, batch_size=batch_size, seed=seed, sampling=spec)
            pool, predicted = score(images)
            mu, sigma = gaussian_statistics(pool)
            fids.append(float(frechet_distance(mu, sigma, reference.mu, reference.sigma)))
            accuracies.append(float((predicted == labels.numpy()).mean()))
            print(f"  {name} seed {seed}: FID {fids[-1]:.3f}, acc {accuracies[-1]:.3f}", file=sys.stderr, flush=True)
        results[name] = {
            "FID": statistics.mean(fids),
            "FID spread": max(fids) - min(fids),
            "class acc": statistics.mean(accuracies),
            "acc spread": max(accuracies) - min(accuracies),
        }
    exact = results["exact"]
    note = (
        f"quality: quickstart model, {len(labels)} samples per seed, mean over seeds {seeds}; exact sampler "
        f"seed-to-seed spread: FID {exact['FID spread']:.3f}, class accuracy {exact['acc spread']:.3f}; "
        f"classifier on the {len(truth)} real val images: {ceiling:.3f} (ceiling); draft_refine: "
        + (
            f"refiner {refiner_dir} (depth {refiner.depth})"
            if refiner is not None
            else "no refiner given (--refiner: a smaller model trained on the same tokenizer)"
        )
    )
    return results, note


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and value != value) else format(value, spec)


def print_matrix(
    speed_rows: dict[str, dict[str, Any]], quality_rows: dict[str, dict[str, Any]], batches: list[int]
) -> None:
    ref = speed_rows.get("reference", {})
    header = ["row"]
    for batch in batches:
        header += [f"s/img b{batch}", f"x ref b{batch}"]
    header += ["KV MiB", "peak MiB", "FID", "class acc"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in dict.fromkeys([*speed_rows, *quality_rows]):
        s, q = speed_rows.get(name, {}), quality_rows.get(name, {})
        cells = [name]
        for batch in batches:
            t = s.get(f"s/img b{batch}")
            r = ref.get(f"s/img b{batch}")
            paired = s.get(f"x ref b{batch}", r / t if (t and r) else None)
            cells += [_fmt(t, ".3f"), _fmt(paired, ".2f")]
        cells += [_fmt(s.get("KV MiB"), ".1f"), _fmt(s.get("peak MiB"), ".0f")]
        cells += [_fmt(q.get("FID"), ".3f"), _fmt(q.get("class acc"), ".3f")]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["speed", "quality"], choices=["speed", "memory", "quality"])
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU time (robust on a busy machine)"
    )
    parser.add_argument("--quality-root", type=Path, default=Path("/work/artifacts/quickstart"))
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument(
        "--checkpoint", type=Path, help="a quickstart training checkpoint (EMA weights) instead of the export"
    )
    parser.add_argument(
        "--refiner", type=Path, help="quality: an exported smaller model on the same tokenizer for draft_refine rows"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--sample-batch", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--rows", nargs="+", default=[], help="only these rows, e.g. exact 'fast (stack)'")
    parser.add_argument(
        "--extra-row", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
        help="another row: a name and a JSON list of speed-up specs, e.g. "
        "'[{\"name\": \"token_pruning\", \"ratio\": 0.6}]', or an object with the list under \"speedups\" and "
        "a CPU linear backend for this row under \"cpu_linear\", e.g. '{\"cpu_linear\": \"aten\"}'",
    )  # fmt: skip
    parser.add_argument("--child-peak", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _ONLY[:] = args.rows
    for name, text in args.extra_row:
        value = json.loads(text)
        if isinstance(value, dict):  # {"speedups": [...], "cpu_linear": "onednn_packed"}
            _EXTRA[name] = list(value.get("speedups", []))
            if "cpu_linear" in value:
                _BACKENDS[name] = str(value["cpu_linear"])
        else:
            _EXTRA[name] = value
    if args.child_peak:
        _child_peak(args.child_peak, args.depth)
        return
    speed_rows: dict[str, dict[str, Any]] = {}
    quality_rows: dict[str, dict[str, Any]] = {}
    note = ""
    if "speed" in args.parts:
        speed_rows = speed(args.depth, args.batch, args.reps, args.threads, args.clock)
    if "memory" in args.parts:
        for name, peak in peak_memory(args.depth).items():
            speed_rows.setdefault(name, {})["peak MiB"] = peak
    if "quality" in args.parts:
        quality_rows, note = quality(
            args.quality_root, args.per_class, args.seeds, args.sample_batch, args.checkpoint, args.refiner
        )
    from varkit.nn.cpu_linear import cpu_linear_backend

    print(
        f"VAR-d{args.depth} shape, fp32, {args.threads} threads, {args.clock} clock, cfg 1.5 linear, top-k 900, "
        f"top-p 0.96, 256 px decode included; median of {args.reps} round-robin runs; CPU linears: "
        f"{cpu_linear_backend()}"
    )
    print_matrix(speed_rows, quality_rows, args.batch)
    if note:
        print(note)
    if args.json:
        args.json.write_text(json.dumps({"speed": speed_rows, "quality": quality_rows, "note": note}, indent=2))


if __name__ == "__main__":
    main()
