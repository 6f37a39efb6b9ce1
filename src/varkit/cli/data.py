"""``varkit data``: pack image folders into shards, write the demo dataset, pre-tokenize image shards."""

from __future__ import annotations

import argparse
import json

HELP = "data tools: pack an image folder into shards, generate the demo dataset, pre-tokenize shards"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="{pack,demo,tokenize}")

    pack = sub.add_parser("pack", help="image folder (ImageNet layout, or flat + labels) -> webdataset shards")
    pack.add_argument("source", help="folder with one sub-folder per class, or a flat folder (with --labels)")
    pack.add_argument("output", help="folder for shard-*.tar and classes.json")
    pack.add_argument("--labels", help="CSV (filename,label) or JSON ({filename: label}) for a flat folder")
    pack.add_argument("--resolution", type=int, help="resize the shorter side to this and center-crop a square")
    pack.add_argument("--format", default="keep", choices=["keep", "jpg", "png", "webp"], help="stored image format")
    pack.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality when re-encoding")
    pack.add_argument("--max-count", type=int, default=10_000, help="samples per shard at most")
    pack.add_argument("--max-size-mb", type=float, default=1024.0, help="shard size limit in MiB")
    pack.add_argument("--workers", type=int, default=1, help="decode/resize processes (output does not depend on it)")
    pack.add_argument("--no-metadata", action="store_true", help="do not write KEY.json (original path, class)")
    pack.add_argument("--no-progress", action="store_true", help="no progress bar")
    pack.add_argument(
        "--order",
        default="shuffle",
        choices=["shuffle", "sorted"],
        help="shuffle (default): seeded permutation, every shard mixes the classes; sorted: folder order",
    )
    pack.add_argument("--seed", type=int, default=0, help="seed of the shuffle (recorded in pack.json)")

    demo = sub.add_parser("demo", help="write the built-in demo dataset (coloured shapes, 10 classes)")
    demo.add_argument("output", help="folder for train/, val/, classes.json, info.json")
    demo.add_argument("--image-size", type=int, default=32, help="image resolution (32 to 64 recommended)")
    demo.add_argument("--train-per-class", type=int, default=400)
    demo.add_argument("--val-per-class", type=int, default=40)
    demo.add_argument("--classes", type=int, default=10, help="number of classes (2 to 10)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--train-shards", type=int, default=8)
    demo.add_argument("--val-shards", type=int, default=4)

    tokenize = sub.add_parser("tokenize", help="run a trained tokenizer over image shards -> token shards")
    tokenize.add_argument("--tokenizer", required=True, help="saved VQVAE folder (varkit save_pretrained format)")
    tokenize.add_argument("--input", required=True, help="image shards: brace pattern, folder, list with '::'")
    tokenize.add_argument("--output", required=True, help="folder for token shards and tokens.json")
    tokenize.add_argument("--flip", action="store_true", help="also store tokens of the horizontally flipped image")
    tokenize.add_argument("--image-size", type=int, help="default: the tokenizer's image size")
    tokenize.add_argument("--mid-reso", type=float, default=1.125, help="resize shorter side to image_size*mid_reso")
    tokenize.add_argument("--batch-size", type=int, default=32)
    tokenize.add_argument("--max-count", type=int, default=10_000, help="samples per shard at most")
    tokenize.add_argument("--device", default="cpu")
    tokenize.add_argument("--no-progress", action="store_true", help="no progress bar")


def _pack(args: argparse.Namespace) -> int:
    from varkit.data.pack import pack_images

    summary = pack_images(
        args.source,
        args.output,
        labels_file=args.labels,
        resolution=args.resolution,
        image_format=args.format,
        quality=args.quality,
        max_count=args.max_count,
        max_bytes=int(args.max_size_mb * (1 << 20)),
        workers=args.workers,
        metadata=not args.no_metadata,
        progress=not args.no_progress,
        order=args.order,
        seed=args.seed,
    )
    order = f"shuffled across shards with seed {summary.seed}" if summary.order == "shuffle" else "in sorted order"
    print(f"wrote {summary.samples} samples in {len(summary.shards)} shards to {args.output}")
    print(f"{len(summary.classes)} classes -> {args.output}/classes.json; samples {order} ({args.output}/pack.json)")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable files:")
        for line in summary.skipped:
            print(f"  {line}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from varkit.data.demo import generate_demo

    info = generate_demo(
        args.output,
        image_size=args.image_size,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        num_classes=args.classes,
        seed=args.seed,
        train_shards=args.train_shards,
        val_shards=args.val_shards,
    )
    print(
        f"demo dataset: {info['train']['samples']} train + {info['val']['samples']} val images "
        f"({info['num_classes']} classes, {info['image_size']}px, seed {info['seed']}) in {args.output}"
    )
    print(f"train shards: {args.output}/{info['train']['pattern']}")
    print(f"val shards:   {args.output}/{info['val']['pattern']}")
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    import torch

    from varkit.checkpoint import from_pretrained
    from varkit.checkpoint.tokenizer_source import tokenizer_identity
    from varkit.data.tokens import write_token_shards
    from varkit.models.vqvae import VQVAE

    model = from_pretrained(args.tokenizer, expect="vqvae", device=args.device)
    assert isinstance(model, VQVAE)
    image_size = args.image_size or model.image_size[0]
    summary = write_token_shards(
        model.tokenize,
        args.input,
        args.output,
        image_size=image_size,
        codebook_size=int(model.quantizer.codebook_size),
        scales=[(int(h), int(w)) for h, w in model.scales.sizes],
        codebook_sizes=getattr(model.quantizer, "codebook_sizes", None),
        flip=args.flip,
        mid_reso=args.mid_reso,
        batch_size=args.batch_size,
        max_count=args.max_count,
        device=torch.device(args.device),
        progress=not args.no_progress,
        tokenizer=tokenizer_identity(model, args.tokenizer),
    )
    skipped = summary.pop("skipped")
    health = summary.pop("codebook_health")
    print(f"wrote {summary['samples']} token pyramids ({summary['dtype']}) to {args.output}")
    if health is not None:  # how much of each scale's vocabulary these images use
        print("codebook usage per scale (used / codes, used / reachable):")
        for k, (used, codes, reachable) in enumerate(zip(health["used"], health["codes"], health["reachable"])):
            print(f"  scale {k}: {used} / {codes} codes ({used / codes:.1%}), {used / reachable:.1%} of reachable")
    print(json.dumps(summary))
    total = skipped["corrupt"] + skipped["missing_keys"]
    if total or skipped["shard_errors"]:
        print(
            f"skipped {total} samples; {skipped['shard_errors']} damaged shard(s) lost {skipped.get('lost', 0)} more "
            f"(counted from shards.json): {skipped['examples']}"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    from varkit.cli import fail

    handlers = {"pack": _pack, "demo": _demo, "tokenize": _tokenize}
    try:
        return handlers[args.data_command](args)
    except (ValueError, FileNotFoundError) as error:
        return fail(str(error))
