"""Tokenizer league table: every multi-scale quantizer on the demo data at the same step budget (issue 17).

For each variant (msvq with and without dead-code restart, msfsq, msibq, mssimvq, msbsq; all with 512 codes per
scale) this script

1. trains the tokenizer with the real command ``varkit train-tokenizer experiment=tokenizer_demo quantizer=...``
   (the quickstart's tokenizer budget, 2000 steps), timing the run;
2. measures it on every demo validation image: PSNR, SSIM, reconstruction FID with the ``tiny_demo`` extractor
   (the ``tiny`` network with its classifier fitted on the demo training shards), and per-scale code usage
   (distinct codes / codes, and / the codes reachable: the 1x1 map over N images can use at most N codes);
3. (``--transformer``) runs the rest of ``varkit quickstart`` on that tokenizer (tokenize, train the transformer
   with the quickstart budget, sample) and measures the generator: generation FID (``tiny_demo``) and class
   accuracy (fraction of generated images whose ``tiny_demo`` logits argmax is the requested class).

Runs are one at a time, resumable: each variant lives in ``ROOT/<variant>/`` (``ROOT`` defaults to
``/work/artifacts/league``); a finished stage is skipped and its saved figures are reused. Demo data are linked
from ``--data`` (default: the quickstart's). Then one markdown table is printed (and written to ``ROOT/table.md``).

    nice -n 10 python benchmarks/tokenizers.py                      # tokenizers only
    nice -n 10 python benchmarks/tokenizers.py --transformer        # + transformers (long)
    python benchmarks/tokenizers.py --report                        # print the table of what has finished
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, and its name would shadow the `tokenizers` package
# that torchmetrics -> transformers imports; drop the folder (nothing here imports a sibling module).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "msvq": ["quantizer=msvq", "codebook.restart=false"],
    "msvq+restart": ["quantizer=msvq", "codebook.restart=true"],
    "msfsq": ["quantizer=msfsq", "quantizer.levels=[8,8,8]"],  # 512 codes: the same vocabulary as the others
    "msibq": ["quantizer=msibq", "codebook.restart=false"],
    # per-scale vocabularies: the coarse maps get as many codes as their content spreads over (the 1x1 latent of
    # the demo's 10 classes lands on ~20 of 512 codes with every quantizer), the fine ones the full 512
    "msibq-vocab": ["quantizer=msibq", "codebook.restart=false", "quantizer.codebook_sizes=[16,128,256,512,512,512]"],
    "msibq-vocab8": ["quantizer=msibq", "codebook.restart=false", "quantizer.codebook_sizes=[8,64,256,512,512,512]"],
    "msibq-vocab4": ["quantizer=msibq", "codebook.restart=false", "quantizer.codebook_sizes=[4,32,256,512,512,512]"],
    "mssimvq": ["quantizer=mssimvq", "codebook.restart=false"],
    "msbsq": ["quantizer=msbsq", "quantizer.bits=9"],
}
#: the order runs are started in: the new quantizers first (the issue's question), the baselines after
ORDER = ["mssimvq", "msibq", "msibq-vocab", "msibq-vocab8", "msibq-vocab4", "msbsq", "msfsq", "msvq", "msvq+restart"]


def _varkit(arguments: list[str], log: Path) -> float:
    command = [sys.executable, "-m", "varkit", *arguments]
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    if done.returncode:
        raise SystemExit(f"`varkit {' '.join(arguments[:3])} ...` failed; see {log}")
    return time.perf_counter() - start


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _link_data(root: Path, data: Path) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    link = root / "data" / "demo"
    if not link.exists():
        link.symlink_to(data.resolve())


def train_tokenizer(root: Path, variant: str, steps: int | None) -> dict[str, Any]:
    exported = root / "runs" / "tokenizer-demo" / "tokenizer"
    timing = root / "tokenizer_time.json"
    if (exported / "config.json").is_file() and timing.is_file():
        return _read_json(timing) or {}
    arguments = [
        "train-tokenizer", "experiment=tokenizer_demo", f"paths.root={root}", "name=tokenizer-demo", "logger=csv",
        "trainer.enable_progress_bar=false", "seed=0", *VARIANTS[variant],
        *([f"trainer.max_steps={steps}"] if steps else []),
    ]  # fmt: skip
    seconds = _varkit(arguments, root / "tokenizer.log")
    config = json.loads((exported / "config.json").read_text())
    result = {"seconds": seconds, "steps": steps or 2000, "quantizer": config["config"]["quantizer"]}
    timing.write_text(json.dumps(result, indent=1) + "\n")
    return result


def adopt(root: Path, run: Path) -> None:
    """Link a finished tokenizer run (``.../runs/tokenizer-demo``) as this variant's; when the transformer trained on
    it sits beside it (``.../runs/var-demo``, as ``varkit quickstart`` leaves them), link that too."""
    (root / "runs").mkdir(parents=True, exist_ok=True)
    link = root / "runs" / "tokenizer-demo"
    if not link.exists():
        link.symlink_to(run.resolve())
    generator = run.parent / "var-demo"
    if (generator / "model").is_dir() and not (root / "runs" / "var-demo").exists():
        (root / "runs" / "var-demo").symlink_to(generator.resolve())
        marker = {"seconds": None, "adopted": str(generator)}
        (root / "transformer_time.json").write_text(json.dumps(marker) + "\n")
    timing = root / "tokenizer_time.json"
    if not timing.is_file():
        config = json.loads((run / "tokenizer" / "config.json").read_text())
        steps = 2000
        timing.write_text(json.dumps({"seconds": None, "steps": steps, "quantizer": config["config"]["quantizer"],
                                      "adopted": str(run)}, indent=1) + "\n")  # fmt: skip


def _val_images(data: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from varkit.data.shards import expand_urls
    from varkit.evaluation.shard_images import iter_shard_samples

    samples = list(iter_shard_samples(expand_urls(str(data / "val")), size))
    images = torch.stack([torch.from_numpy(image.copy()).permute(2, 0, 1) for image, _ in samples])
    return images, torch.tensor([label for _, label in samples])


def _extractor(data: Path) -> Any:
    from varkit.evaluation.extractors import build_extractor

    return build_extractor({"name": "tiny", "fit_on": str(data / "train")})


def _fid(extractor: Any, real: torch.Tensor, fake: torch.Tensor) -> tuple[float, torch.Tensor]:
    from varkit.evaluation.features import extract_features
    from varkit.evaluation.metrics import frechet_distance

    real_pool, _ = extract_features(extractor, real.split(100))
    fake_pool, fake_logits = extract_features(extractor, fake.split(100))

    def stats(x: torch.Tensor) -> tuple[Any, Any]:
        return x.mean(0).numpy(), torch.cov(x.T).numpy()

    return float(frechet_distance(*stats(real_pool), *stats(fake_pool))), fake_logits


@torch.no_grad()
def evaluate_tokenizer(root: Path, data: Path, extractor: Any) -> dict[str, Any]:
    saved = root / "tokenizer_eval.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    from varkit.checkpoint import from_pretrained
    from varkit.quantizers.codebook import codebook_health, vocabulary_sizes_of

    vae = from_pretrained(root / "runs" / "tokenizer-demo" / "tokenizer", expect="vqvae")
    images, _ = _val_images(data, int(vae.image_size[0]))  # type: ignore[index]
    psnr, ssim = PeakSignalNoiseRatio(data_range=1.0), StructuralSimilarityIndexMeasure(data_range=1.0)
    recon: list[torch.Tensor] = []
    counts = torch.zeros(len(vae.scales), int(vae.quantizer.codebook_size), dtype=torch.float64)  # type: ignore[arg-type, union-attr]
    for batch in images.split(50):
        x = batch.float() / 127.5 - 1.0
        tokens = vae.tokenize(x)  # type: ignore[operator]
        for k, t in enumerate(tokens):
            counts[k] += torch.bincount(t.flatten(), minlength=counts.shape[1]).double()
        out = vae.decode_latents(vae.quantizer.decode(tokens, vae.scales)).float().clamp(-1, 1)  # type: ignore[operator, union-attr]
        psnr.update((out + 1) / 2, (x + 1) / 2)
        ssim.update((out + 1) / 2, (x + 1) / 2)
        recon.append(((out + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
    fid, _ = _fid(extractor, images, torch.cat(recon))
    health = codebook_health(counts, vocabulary_sizes_of(vae.quantizer, vae.scales), images=len(images))  # type: ignore[arg-type]
    result = {
        "psnr": float(psnr.compute()),
        "ssim": float(ssim.compute()),  # type: ignore[arg-type]
        "rfid": fid,
        "images": len(images),
        **health,
    }
    saved.write_text(json.dumps(result, indent=1) + "\n")
    return result


@torch.no_grad()
def train_usage(root: Path, data: Path) -> dict[str, Any]:
    """Per-scale code usage over every demo *training* image (4000 images: every scale has more positions than
    codes, so 100 % is reachable everywhere; the 200 validation images leave the 2x2 map 800 draws for 512 codes,
    where even perfectly uniform use would show only ~79 %)."""
    saved = root / "train_usage.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    from varkit.checkpoint import from_pretrained
    from varkit.data.shards import expand_urls
    from varkit.evaluation.shard_images import iter_shard_samples
    from varkit.quantizers.codebook import codebook_health, vocabulary_sizes_of

    vae: Any = from_pretrained(root / "runs" / "tokenizer-demo" / "tokenizer", expect="vqvae")
    images = [image for image, _ in iter_shard_samples(expand_urls(str(data / "train")), int(vae.image_size[0]))]
    counts = torch.zeros(len(vae.scales), int(vae.quantizer.codebook_size), dtype=torch.float64)
    for start in range(0, len(images), 200):
        batch = torch.stack([torch.from_numpy(i.copy()).permute(2, 0, 1) for i in images[start : start + 200]])
        for k, t in enumerate(vae.tokenize(batch.float() / 127.5 - 1.0)):
            counts[k] += torch.bincount(t.flatten(), minlength=counts.shape[1]).double()
    health = codebook_health(counts, vocabulary_sizes_of(vae.quantizer, vae.scales), images=len(images))
    saved.write_text(json.dumps(health, indent=1) + "\n")
    return health


def train_transformer(root: Path, variant: str, steps: int | None) -> float | None:
    marker = root / "transformer_time.json"
    if marker.is_file():
        seconds = json.loads(marker.read_text())["seconds"]
        return None if seconds is None else float(seconds)
    overrides = [a for item in VARIANTS[variant] for a in ("--tokenizer-override", item)]
    budget = ["--steps", str(steps)] if steps else []
    seconds = _varkit(["quickstart", "--output", str(root), *overrides, *budget], root / "quickstart.log")
    marker.write_text(json.dumps({"seconds": seconds}) + "\n")
    return seconds


@torch.no_grad()
def evaluate_generator(root: Path, data: Path, extractor: Any, per_class: int, cfg: float) -> dict[str, Any]:
    saved = root / "generator_eval.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    from varkit.checkpoint.generator import load_generator
    from varkit.models.var import sample_images

    var: Any
    vae: Any
    var, vae, _ = load_generator(root / "runs" / "var-demo" / "model")
    real, _ = _val_images(data, int(vae.image_size[0]))  # type: ignore[index]
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(var.num_classes).repeat_interleave(per_class)
    fakes = [
        (sample_images(var, vae, chunk, generator=generator, cfg=cfg, top_k=0, top_p=0.0) * 255).round().to(torch.uint8)
        for chunk in labels.split(50)
    ]
    fid, logits = _fid(extractor, real, torch.cat(fakes))
    accuracy = float((logits.argmax(1) == labels).double().mean())
    result = {"gfid": fid, "accuracy": accuracy, "samples": len(labels), "cfg": cfg}
    saved.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _fmt_list(values: list[float], digits: int = 2) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def table(root: Path) -> str:
    header = [
        "tokenizer", "PSNR dB", "SSIM", "rFID (tiny)", "usage per scale, train (4000 img)",
        "usage per scale, val (of reachable)", "codes per scale",
        "s/step", "gFID (tiny)", "class acc.",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in ORDER:
        tok = _read_json(root / variant / "tokenizer_eval.json")
        timing = _read_json(root / variant / "tokenizer_time.json")
        gen = _read_json(root / variant / "generator_eval.json")
        train = _read_json(root / variant / "train_usage.json")
        if tok is None:
            lines.append(f"| {variant} | not run |" + " |" * (len(header) - 2))
            continue
        seconds, steps = (timing.get("seconds"), timing.get("steps", 2000)) if timing else (None, 2000)
        per_step = f"{seconds / steps:.3f}" if seconds else "?"
        cells = [
            variant, f"{tok['psnr']:.2f}", f"{tok['ssim']:.3f}", f"{tok['rfid']:.2f}",
            _fmt_list(train["usage"]) if train else "?", _fmt_list(tok["usage_of_reachable"]),
            " / ".join(str(c) for c in tok["codes"]), per_step,
            f"{gen['gfid']:.2f}" if gen else "not run", f"{gen['accuracy']:.2f}" if gen else "not run",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/work/artifacts/league"))
    parser.add_argument("--data", type=Path, default=Path("/work/artifacts/quickstart/data/demo"))
    parser.add_argument("--variants", nargs="+", default=ORDER, choices=ORDER)
    parser.add_argument("--steps", type=int, default=None, help="tokenizer steps (default: the preset's 2000)")
    parser.add_argument("--transformer", action="store_true", help="also train and evaluate the transformers")
    parser.add_argument("--transformer-steps", type=int, default=None, help="default: the quickstart's budget")
    parser.add_argument("--per-class", type=int, default=20, help="generated images per class (generation FID)")
    parser.add_argument("--cfg", type=float, default=1.5)
    parser.add_argument("--report", action="store_true", help="only print the table of finished runs")
    parser.add_argument(
        "--adopt",
        type=Path,
        help="with one --variants NAME: take this finished tokenizer run dir (e.g. the "
        "quickstart's runs/tokenizer-demo, which is msvq+restart at seed 0) instead of training it again",
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if not args.report:
        extractor = None
        for variant in args.variants:
            root = args.root / variant
            _link_data(root, args.data)
            if args.adopt:
                adopt(root, args.adopt)
            train_tokenizer(root, variant, args.steps)
            extractor = extractor or _extractor(args.data)
            evaluate_tokenizer(root, args.data, extractor)
            train_usage(root, args.data)
            print(f"{variant}: tokenizer done", flush=True)
        if args.transformer:
            for variant in args.variants:
                root = args.root / variant
                train_transformer(root, variant, args.transformer_steps)
                evaluate_generator(root, args.data, extractor or _extractor(args.data), args.per_class, args.cfg)
                print(f"{variant}: transformer done", flush=True)
    text = table(args.root)
    (args.root / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
