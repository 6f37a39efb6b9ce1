"""Data pipeline throughput, per DataLoader worker process (one process, ``num_workers=0``).

* 256px JPEG samples/s: decode (Pillow) + VAR augmentation (resize shorter side to 288, random crop 256, flip,
  to [-1, 1]) from webdataset shards of 320x400 JPEGs.
* token-shard samples/s: 680-token pyramids (VAR's 256px schedule, uint16 on disk) → int64 batches.
* transformer-input preparation per batch of 8 (VAR §3.2 teacher forcing): from token shards (read + build the
  teacher-forcing inputs with the quantizer) versus on the fly (decode images + ``vqvae_f16`` encoding + the
  same), with the ratio. Random weights: timing does not depend on them.

    python benchmarks/data.py                  # all of it (the vqvae part takes a minute on 2 cores)
    python benchmarks/data.py --skip-vqvae --repeats 5

Prints medians of ``--repeats`` runs; shards are generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from varkit.data import ShardWriter
from varkit.data.modules import TokenDataModule, WebDataModule
from varkit.data.tokens import write_token_shards


def make_jpeg_shards(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    with ShardWriter(folder, max_count=max(1, count // 4)) as writer:
        for i in range(count):
            coarse = rng.integers(0, 256, size=(10, 8, 3), dtype=np.uint8)  # smooth, photo-like content
            image = Image.fromarray(coarse).resize((320, 400), Image.Resampling.BICUBIC)
            noise = rng.normal(0, 6, size=(400, 320, 3))
            image = Image.fromarray(np.clip(np.asarray(image, float) + noise, 0, 255).astype(np.uint8))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            writer.write(f"{i:06d}", {"jpg": buffer.getvalue(), "cls": str(i % 1000).encode()})


def var_256_scales() -> list[tuple[int, int]]:
    return [(s, s) for s in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)]


def make_token_shards(folder: Path, images: Path) -> None:
    scales = var_256_scales()
    generator = torch.Generator().manual_seed(0)

    def random_tokenize(batch: torch.Tensor) -> list[torch.Tensor]:
        return [torch.randint(0, 4096, (batch.shape[0], h * w), generator=generator) for h, w in scales]

    write_token_shards(
        random_tokenize, str(images), folder, image_size=256, codebook_size=4096, scales=scales, flip=True, max_count=64
    )


def samples_per_second(datamodule, repeats: int) -> tuple[float, float]:
    """Median samples per wall-clock second and per CPU second of this process."""
    datamodule.setup("fit")
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu, count = time.perf_counter(), time.process_time(), 0
        for inputs, _ in datamodule.train_dataloader():
            count += len(inputs)
        wall.append(count / (time.perf_counter() - start))
        cpu.append(count / (time.process_time() - start_cpu))
    return statistics.median(wall), statistics.median(cpu)


def preparation_times(images_dir: Path, tokens_dir: Path, repeats: int) -> tuple[tuple[float, float], ...]:
    from varkit.models.vqvae import vqvae_preset

    vae = vqvae_preset("vqvae_f16").eval()
    quantizer, scales = vae.quantizer, vae.scales
    image_dm = WebDataModule(str(images_dir), image_size=256, batch_size=8, shuffle_buffer=0, drop_last=False)
    token_dm = TokenDataModule(str(tokens_dir), batch_size=8, shuffle_buffer=0, per_scale=True, drop_last=False)
    image_dm.setup("fit")
    token_dm.setup("fit")

    def timed(step) -> tuple[float, float]:
        step()  # warm-up: loader start, first-call allocations
        wall, cpu = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        return statistics.median(wall), statistics.median(cpu)

    image_iter, token_iter = iter(image_dm.train_dataloader()), iter(token_dm.train_dataloader())

    @torch.no_grad()
    def from_images() -> None:
        images, _ = next(image_iter)
        quantizer.teacher_forcing_inputs(vae.tokenize(images), scales)

    @torch.no_grad()
    def from_tokens() -> None:
        indices, _ = next(token_iter)
        quantizer.teacher_forcing_inputs(indices, scales)

    return timed(from_tokens), timed(from_images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="JPEGs in the benchmark shards")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-vqvae", action="store_true", help="skip the on-the-fly vqvae_f16 comparison")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        images_dir, tokens_dir = Path(tmp) / "images", Path(tmp) / "tokens"
        make_jpeg_shards(images_dir, args.images)
        make_token_shards(tokens_dir, images_dir)
        rows = []
        jpeg_dm = WebDataModule(
            str(images_dir), image_size=256, batch_size=32, shuffle_buffer=100, hflip=True, drop_last=False
        )
        wall, cpu = samples_per_second(jpeg_dm, args.repeats)
        rows.append(("256px JPEG decode + augment (samples/s)", f"{wall:,.0f}", f"{cpu:,.0f}"))
        token_dm = TokenDataModule(str(tokens_dir), batch_size=32, shuffle_buffer=100, hflip=True, drop_last=False)
        wall, cpu = samples_per_second(token_dm, args.repeats)
        rows.append(("token shards, 680 tokens (samples/s)", f"{wall:,.0f}", f"{cpu:,.0f}"))
        if not args.skip_vqvae:
            tokens_t, images_t = preparation_times(images_dir, tokens_dir, args.repeats)
            rows.append(("batch of 8 from token shards (ms)", f"{tokens_t[0] * 1e3:,.1f}", f"{tokens_t[1] * 1e3:,.1f}"))
            rows.append(
                ("batch of 8 by vqvae_f16 encoding (ms)", f"{images_t[0] * 1e3:,.0f}", f"{images_t[1] * 1e3:,.0f}")
            )
            rows.append(
                (
                    "ratio on the fly / token shards",
                    f"{images_t[0] / tokens_t[0]:,.0f}x",
                    f"{images_t[1] / tokens_t[1]:,.0f}x",
                )
            )
    width = max(len(row[0]) for row in rows)
    print(f"per worker process (num_workers=0, 2 threads), median of {args.repeats}; CPU = this process's CPU time")
    print(f"{'':<{width}}  {'wall':>10}  {'CPU':>10}")
    for name, wall_value, cpu_value in rows:
        print(f"{name:<{width}}  {wall_value:>10}  {cpu_value:>10}")


if __name__ == "__main__":
    main()
