"""Small-data fine-tuning, measured: 5 known classes → all 10 demo classes (5 new), against training from scratch.

VAR paper Sec. 4 trains from scratch; this measures what ``init_from`` + ``finetune.*`` buy on little data. On the
demo data (the quickstart's tokenizer and token shards are reused, nothing is retrained):

1. ``base5``: the quickstart transformer (``experiment=quickstart``) trained on classes 0-4 only;
2. on all 10 classes, the same number of steps each, evaluated every ``--every`` steps (EMA weights, LoRA merged):
   ``scratch`` (fresh weights), ``full`` (``init_from`` base5, everything trains), ``frozen`` (first half of the
   blocks frozen), ``lora`` (``finetune.lora.rank``; class embedding trains too).

Quality at each evaluation point: FID with the ``tiny_demo`` evaluator (random conv features; its classifier head
is fitted on the real demo training images) between ``--per-class`` samples per class and the demo validation
images, and class accuracy = the fraction of samples whose ``tiny_demo`` logits argmax equals the requested class.
"Steps to quality" is the first evaluation step where a variant reaches the from-scratch run's final FID (and its
final accuracy). Also: trainable parameters and the training process's peak RSS (and the optimiser + gradient bytes
of the trainable parameters, which is what differs between variants).

    python benchmarks/finetune.py --quickstart /work/artifacts/quickstart --steps 240 --every 40

The shared machine is noisy: steps, not seconds, are the measure. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

VARIANTS: dict[str, list[str]] = {
    "scratch": [],
    "full": ["optim.lr=5e-4"],
    "frozen": ["optim.lr=5e-4", "finetune.freeze_blocks=3"],
    "lora": ["optim.lr=2e-3", "finetune.lora.rank=16", "finetune.lora.alpha=32"],
}


def filter_token_shards(source: Path, target: Path, keep: set[int]) -> int:
    """Copy the samples of ``source`` token shards whose label is in ``keep`` to ``target``; returns the count."""
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for shard in sorted(source.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
            payload = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
        keys = sorted({name.split(".", 1)[0] for name in payload})
        kept = [k for k in keys if int(payload[f"{k}.cls"]) in keep]
        with tarfile.open(target / shard.name, "w") as out:
            for key in kept:
                for name in sorted(n for n in payload if n.split(".", 1)[0] == key):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload[name])
                    out.addfile(info, fileobj=__import__("io").BytesIO(payload[name]))
        count += len(kept)
    (target / "tokens.json").write_text((source / "tokens.json").read_text())
    return count


def train(name: str, root: Path, common: list[str], extra: list[str]) -> dict[str, Any]:
    """One ``varkit train`` in a child process; returns its peak RSS (MiB) and wall time."""
    code = (
        "import resource, sys\n"
        "from varkit.cli import main\n"
        f"rc = main(['train', *{[f'name={name}', *common, *extra]!r}])\n"
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    if result.returncode != 0:
        raise SystemExit(f"training {name} failed:\n{result.stderr[-3000:]}")
    rss = next(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB"))
    return {"peak_rss_mib": rss / 1024, "seconds": time.perf_counter() - start}


def model_from_checkpoint(path: Path) -> tuple[torch.nn.Module, int, int]:
    """``(VAR with EMA weights and LoRA merged, trainable parameters, step)`` from a Lightning checkpoint."""
    from varkit.models.var import VAR
    from varkit.training.finetune import apply_var_finetune, has_lora, merge_lora, trainable_parameters

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    params = checkpoint["hyper_parameters"]
    model = VAR.from_config(params["model"])
    if params.get("finetune"):
        apply_var_finetune(model, params["finetune"])
    trainable, _ = trainable_parameters(model)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    shadow = next((v["shadow"] for k, v in checkpoint["callbacks"].items() if "EMA" in k), {})
    state.update(shadow)
    model.load_state_dict(state, strict=True)
    if has_lora(model):
        model = merge_lora(model)
    return model.eval(), trainable, int(checkpoint["global_step"])


class Judge:
    """FID (``tiny_demo`` features) against the demo validation images, and class accuracy of the samples."""

    def __init__(self, demo: Path, per_class: int, seed: int = 0) -> None:
        from varkit.data.shards import expand_urls
        from varkit.evaluation.features import extract_features
        from varkit.evaluation.metrics import gaussian_statistics
        from varkit.evaluation.shard_images import image_batches, iter_shard_images
        from varkit.evaluation.tiny import TinyExtractor

        self.extractor = TinyExtractor(fit_on=str(demo / "train"), fit_images=4000)  # = evaluator=tiny_demo
        images = iter_shard_images(expand_urls(str(demo / "val")), 32)
        pool, _ = extract_features(self.extractor, image_batches(images, 256))
        self.reference = gaussian_statistics(pool.numpy())
        self.per_class, self.seed = per_class, seed

    @torch.no_grad()
    def __call__(self, var: torch.nn.Module, vqvae: torch.nn.Module) -> dict[str, float]:
        from varkit.evaluation.features import extract_features
        from varkit.evaluation.metrics import frechet_distance, gaussian_statistics
        from varkit.image_io import to_uint8
        from varkit.models.var import sample_images

        labels = torch.arange(10).repeat_interleave(self.per_class)
        generator = torch.Generator().manual_seed(self.seed)
        batches = []
        for chunk in labels.split(100):
            images = sample_images(var, vqvae, chunk, cfg=2.0, generator=generator)  # type: ignore[arg-type]
            batches.append(torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).contiguous())  # uint8 NCHW
        pool, logits = extract_features(self.extractor, batches)
        fid = frechet_distance(*gaussian_statistics(pool.numpy()), *self.reference)
        accuracy = float((logits.argmax(dim=1) == labels).double().mean())
        return {"fid": float(fid), "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quickstart", type=Path, default=Path("/work/artifacts/quickstart"))
    parser.add_argument("--tokenizer", type=Path, help="default: <quickstart>/runs/tokenizer-demo/tokenizer")
    parser.add_argument("--work", type=Path, default=Path("runs-bench-finetune"))
    parser.add_argument("--steps", type=int, default=240, help="steps of base5 and of every 10-class variant")
    parser.add_argument("--every", type=int, default=40, help="evaluate every this many steps")
    parser.add_argument("--per-class", type=int, default=20, help="samples per class per evaluation")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()

    from varkit.checkpoint.tokenizer_source import load_tokenizer
    from varkit.data.shards import read_classes, write_classes

    quickstart, work = args.quickstart.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = (args.tokenizer or quickstart / "runs" / "tokenizer-demo" / "tokenizer").resolve()
    demo, tokens = quickstart / "data" / "demo", quickstart / "data" / "demo_tokens"
    if not (tokenizer / "config.json").is_file():  # the quickstart's tokenizer run not finished: its last snapshot
        from varkit.checkpoint.export import export_tokenizer_checkpoint

        snapshots = sorted((quickstart / "runs" / "tokenizer-demo" / "checkpoints").glob("step*.ckpt"))
        tokenizer = export_tokenizer_checkpoint(snapshots[-1], work / "tokenizer")
        print(f"using the tokenizer snapshot {snapshots[-1].name} (exported to {tokenizer})")
    if not (tokens / "train" / "tokens.json").is_file():
        tokens = work / "demo_tokens"
        for split, flip in (("train", []), ("val", [])):  # no --flip: half the tokenizing time on a busy machine
            if not (tokens / split / "tokens.json").is_file():
                command = [
                    sys.executable,
                    "-m",
                    "varkit",
                    "data",
                    "tokenize",
                    "--tokenizer",
                    str(tokenizer),
                    "--input",
                    str(demo / split),
                    "--output",
                    str(tokens / split),
                    "--no-progress",
                    *flip,
                ]
                subprocess.run(command, check=True, capture_output=True)  # fmt: skip
    classes = read_classes(demo)
    write_classes(work / "classes5", classes[:5])
    for split in ("train", "val"):
        if not (work / "tokens5" / split / "tokens.json").is_file():
            filter_token_shards(tokens / split, work / "tokens5" / split, set(range(5)))
    common = [
        "experiment=quickstart", f"paths.root={work}", f"tokenizer.path={tokenizer}", "logger=csv",
        f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.every}", "trainer.limit_val_batches=2",
        f"callbacks.model_checkpoint.every_n_train_steps={args.every}", "callbacks.sample_grid.every_n_steps=0",
        "callbacks.sample_grid.at_end=false", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    ten = [f"data.train_urls={tokens / 'train'}", f"data.val_urls={tokens / 'val'}", f"export.classes={demo}"]
    runs: dict[str, dict[str, Any]] = {}
    if not (work / "runs" / "base5" / "model" / "config.json").is_file():
        five = [f"data.train_urls={work / 'tokens5/train'}", f"data.val_urls={work / 'tokens5/val'}"]
        runs["base5"] = train("base5", work, common, [*five, f"export.classes={work / 'classes5'}"])
    base_model = work / "runs" / "base5" / "model"
    for variant in args.variants:
        init = [] if variant == "scratch" else [f"init_from={base_model}"]
        runs[variant] = train(variant, work, common, [*ten, *init, *VARIANTS[variant]])

    vqvae = load_tokenizer(tokenizer)
    judge = Judge(demo, args.per_class)
    results: dict[str, Any] = {}
    for variant in args.variants:
        points = []
        for checkpoint in sorted((work / "runs" / variant / "checkpoints").glob("step*.ckpt")):
            model, trainable, step = model_from_checkpoint(checkpoint)
            points.append({"step": step, **judge(model, vqvae)})
        total = sum(p.numel() for p in model.parameters())
        optimiser_bytes = trainable * 4 * 3  # fp32 gradient + AdamW's two moments
        results[variant] = {**runs.get(variant, {}), "trainable": trainable, "total": total, "points": points,
                            "optimizer_grad_mib": optimiser_bytes / 2**20}  # fmt: skip
    (work / "finetune.json").write_text(json.dumps(results, indent=1) + "\n")

    target = results["scratch"]["points"][-1] if "scratch" in results else None
    steps = [p["step"] for p in results[args.variants[0]]["points"]]
    print(f"\n{args.steps} steps per variant; base5 pre-trained {args.steps} steps on classes 0-4; "
          f"{args.per_class} samples per class per evaluation\n")  # fmt: skip
    header = "| variant | trainable params | peak RSS MiB | grad+Adam MiB | " + " | ".join(
        f"FID / acc @{s}" for s in steps
    )
    print(header + " | steps to scratch FID | steps to scratch acc |")
    print("|" + "---|" * (header.count("|") + 2))
    for variant, result in results.items():
        cells = [f"{p['fid']:.1f} / {p['accuracy']:.2f}" for p in result["points"]]
        to_fid = to_acc = "—"
        if target is not None:
            to_fid = next((str(p["step"]) for p in result["points"] if p["fid"] <= target["fid"]), f">{args.steps}")
            hit = (str(p["step"]) for p in result["points"] if p["accuracy"] >= target["accuracy"])
            to_acc = next(hit, f">{args.steps}")
        rss = f"{result['peak_rss_mib']:.0f}" if "peak_rss_mib" in result else "—"
        print(f"| {variant} | {result['trainable']:,} | {rss} | {result['optimizer_grad_mib']:.1f} | "
              + " | ".join(cells) + f" | {to_fid} | {to_acc} |")  # fmt: skip
    print(f"\nresults: {work / 'finetune.json'}")
    np.set_printoptions(precision=3)


if __name__ == "__main__":
    main()
