"""Pre-tokenized pyramids: token shards written by a trained tokenizer, and the transformer-stage DataModule.

VAR (Tian et al., 2024, §3.2) trains the transformer on the multi-scale index maps ``(r_1, ..., r_K)`` of each
image. Tokenising on the fly costs a VQVAE encoder pass per sample and epoch; writing the pyramids once turns the
transformer stage into integer reads. Each sample ``KEY`` of a token shard holds

* ``KEY.tokens.npy``: all scales' indices concatenated coarse→fine, shape ``(L,)`` — or ``(2, L)`` when written
  with ``--flip`` (row 1 tokenises the horizontally flipped image, so training can keep VAR's flip augmentation);
  dtype ``uint16`` when the codebook has ≤ 65536 entries, else ``int32``;
* ``KEY.cls``: the class index as ASCII digits;

and ``tokens.json`` beside the shards records the scales, codebook size, image size, flip flag and the identity of
the tokenizer that wrote them (scales, vocabulary, SHA-256 of its weights; see
:mod:`varkit.checkpoint.tokenizer_source`), which the transformer stage checks against its tokenizer: tokens of
another tokenizer would train silently on meaningless codes. Images are
tokenised after the evaluation transform (resize shorter side, center crop), so token shards equal
``tokenize(images)`` on exactly the images the image stage would produce.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varkit.data.images import decode_image, decode_label
from varkit.data.shards import ShardWriter, expand_urls
from varkit.data.stats import SkipStats
from varkit.data.streaming import SkipSample, Urls, stack_collate, watch_shards
from varkit.data.transforms import ImageTransform
from varkit.errors import DataSetupError
from varkit.quantizers.codebook import codebook_health

__all__ = [
    "ScaleSplitCollate",
    "TokenSampleDecoder",
    "read_token_info",
    "split_scales",
    "write_token_shards",
]

logger = logging.getLogger(__name__)

Tokenize = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def token_dtype(codebook_size: int) -> np.dtype:
    """Smallest integer type used on disk for indices of a codebook of ``codebook_size`` entries.

    With per-scale vocabularies the largest one decides; bitwise tokenizers beyond 31 bits need ``int64``.
    """
    if codebook_size <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.int32) if codebook_size <= 2**31 else np.dtype(np.int64)


#: per-scale usage is counted densely up to this vocabulary (larger implicit codebooks, e.g. 2^32 BSQ codes, skip it)
_MAX_COUNTED_VOCABULARY = 1 << 22


def _encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _iter_image_samples(urls: Urls, transform: ImageTransform, stats: SkipStats):
    """``(key, image tensor, label)`` for every readable sample of ``urls`` in shard order (no shuffling)."""
    import webdataset as wds

    reader_errors: list[str] = []
    errored: set[int] = set()

    def on_error(error: Exception) -> bool:
        # webdataset reports one broken tar twice (inner and outer iterator): count each opened shard once
        if len(opened) in errored:
            return True
        errored.add(len(opened))
        reader_errors.append(opened[-1] if opened else "?")
        stats.record("shard_errors", str(error)[:300])
        logger.warning("shard read error, continuing: %s", str(error)[:300])
        return True

    opened: list[str] = []

    def sources():
        for url in expand_urls(urls):
            opened.append(url)
            yield {"url": url}

    rng = np.random.default_rng(0)  # the evaluation transform draws nothing; kept for the common signature
    for sample in watch_shards(wds.tarfile_to_samples(handler=on_error)(sources()), stats, opened, reader_errors):
        key = sample["__key__"]
        try:
            label = decode_label(sample)
            image = transform(decode_image(sample), rng)
        except SkipSample as skip:
            stats.record(skip.kind, key)
            continue
        except Exception:
            stats.record("corrupt", key)
            continue
        yield key.rsplit("/", 1)[-1], image, label


@torch.no_grad()
def write_token_shards(
    tokenize: Tokenize,
    image_urls: Urls,
    out_dir: str | Path,
    *,
    image_size: int,
    codebook_size: int,
    scales: Sequence[tuple[int, int]] | None = None,
    codebook_sizes: Sequence[int] | None = None,
    flip: bool = False,
    mid_reso: float = 1.125,
    batch_size: int = 32,
    max_count: int = 10_000,
    device: torch.device | str = "cpu",
    progress: bool = False,
    tokenizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tokenise image shards into token shards; returns the ``tokens.json`` content plus a skip summary.

    Args:
        tokenize: images ``(b, 3, H, W)`` in ``[-1, 1]`` → per-scale indices ``[(b, h_k * w_k), ...]``
            (e.g. ``VQVAE.tokenize``).
        image_urls: image shard specification.
        out_dir: folder for ``shard-*.tar`` and ``tokens.json``.
        image_size, mid_reso: evaluation transform (resize shorter side to ``image_size * mid_reso``, center crop).
        codebook_size: number of codebook entries (chooses the on-disk dtype; the largest per-scale vocabulary).
        codebook_sizes: per-scale vocabularies (checked per scale and recorded in ``tokens.json``); None: one size.

    The returned summary also holds ``codebook_health``: per-scale usage of the tokens written
    (:func:`varkit.quantizers.codebook.codebook_health`).
        scales: token-map sizes; inferred as squares from the token counts when omitted.
        flip: also store the tokens of the horizontally flipped image.
        tokenizer: the tokenizer's identity (:func:`~varkit.checkpoint.tokenizer_source.tokenizer_identity`), recorded
            in ``tokens.json``.

    Input that yields no readable image is a :class:`DataSetupError` (nothing is left behind).
    """
    expand_urls(image_urls)  # a missing path or a pattern matching nothing fails before anything is written
    created = not Path(out_dir).exists()
    transform = ImageTransform(image_size, train=False, mid_reso=mid_reso)
    dtype = token_dtype(codebook_size)
    stats = SkipStats()
    out_dir = Path(out_dir)
    info: dict[str, Any] = {}
    hits: list[torch.Tensor] = []  # per-scale code hit counts (original images only, not the flips)

    def flush(writer: ShardWriter, keys: list[str], images: list[torch.Tensor], labels: list[int]) -> None:
        nonlocal scales
        batch = torch.stack(images).to(device)
        per_scale = list(tokenize(batch))
        if scales is None:
            scales = [(math.isqrt(t.shape[1]), math.isqrt(t.shape[1])) for t in per_scale]
        counts = [h * w for h, w in scales]
        if [t.shape[1] for t in per_scale] != counts:
            raise ValueError(f"tokenizer returned {[t.shape[1] for t in per_scale]} tokens per scale, not {counts}")
        if codebook_size <= _MAX_COUNTED_VOCABULARY:
            if not hits:
                hits.extend(torch.zeros(codebook_size, dtype=torch.float64) for _ in per_scale)
            for k, tokens in enumerate(per_scale):
                hits[k] += torch.bincount(tokens.flatten().cpu(), minlength=codebook_size)[:codebook_size].double()
        if codebook_sizes is not None:
            for k, (tokens, size) in enumerate(zip(per_scale, codebook_sizes)):
                if int(tokens.max()) >= size:
                    raise ValueError(f"token indices of scale {k} outside its vocabulary [0, {size})")
        flat = torch.cat(per_scale, dim=1)
        if flip:
            flat = torch.stack([flat, torch.cat(list(tokenize(batch.flip(-1))), dim=1)], dim=1)
        array = flat.cpu().numpy()
        if array.min() < 0 or array.max() >= codebook_size:
            raise ValueError(f"token indices outside [0, {codebook_size})")
        for key, tokens, label in zip(keys, array.astype(dtype), labels):
            writer.write(key, {"tokens.npy": _encode_npy(tokens), "cls": str(label).encode()})

    with ShardWriter(out_dir, max_count=max_count) as writer:
        keys: list[str] = []
        images: list[torch.Tensor] = []
        labels: list[int] = []
        samples = _iter_image_samples(image_urls, transform, stats)
        if progress:
            from tqdm import tqdm

            samples = tqdm(samples, desc="tokenize", unit="img")
        for key, image, label in samples:
            keys.append(key)
            images.append(image)
            labels.append(label)
            if len(keys) == batch_size:
                flush(writer, keys, images, labels)
                keys, images, labels = [], [], []
        if keys:
            flush(writer, keys, images, labels)
        written = writer.samples_written
    if not written:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise DataSetupError(
            f"no readable image in {image_urls!r} (skipped: {stats.corrupt} corrupt, {stats.missing_keys} "
            f"incomplete, {stats.shard_errors} unreadable shard(s)); nothing was written"
        )
    assert scales is not None
    info = {
        "scales": [list(s) for s in scales],
        "codebook_size": codebook_size,
        "dtype": dtype.name,
        **({"codebook_sizes": [int(v) for v in codebook_sizes]} if codebook_sizes is not None else {}),
        "image_size": image_size,
        "mid_reso": mid_reso,
        "flip": flip,
        "samples": written,
        **({"tokenizer": tokenizer} if tokenizer is not None else {}),
    }
    (out_dir / "tokens.json").write_text(json.dumps(info, indent=1) + "\n")
    health = None
    if hits:
        health = codebook_health(torch.stack(hits), codebook_sizes, images=written)
    return {**info, "skipped": stats.state_dict(), "codebook_health": health}


def read_token_info(path: str | Path) -> dict[str, Any]:
    """``tokens.json`` of a token-shard folder (or the file itself)."""
    path = Path(path)
    file = path / "tokens.json" if path.is_dir() else path
    if not file.is_file():
        raise DataSetupError(f"{file} does not exist: write token shards with `varkit data tokenize` first")
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise DataSetupError(f"{file} is not readable JSON ({err})") from None
    scales = info.get("scales") if isinstance(info, dict) else None
    if not isinstance(scales, list) or not all(isinstance(s, list) and len(s) == 2 for s in scales):
        raise DataSetupError(f"{file} has no valid 'scales' list: rewrite it with `varkit data tokenize`")
    return info


def split_scales(indices: torch.Tensor, scales: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Flat ``(b, L)`` indices → per-scale list ``[(b, h_k * w_k), ...]``."""
    return list(indices.split([h * w for h, w in scales], dim=1))


class TokenSampleDecoder:
    """``(sample, rng) -> (indices int64 (L,), label)``; picks the flipped row with probability 1/2 if ``hflip``."""

    def __init__(self, total_tokens: int, *, hflip: bool, codebook_size: int | None = None) -> None:
        self.total_tokens = total_tokens
        self.hflip = hflip
        self.codebook_size = codebook_size

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        label = decode_label(sample)
        if "tokens.npy" not in sample:
            raise SkipSample("missing_keys", "sample has no .tokens.npy entry")
        array = np.load(io.BytesIO(sample["tokens.npy"]), allow_pickle=False)
        if array.ndim == 2:
            array = array[1] if self.hflip and rng.random() < 0.5 else array[0]
        if array.shape != (self.total_tokens,):
            raise ValueError(f"expected {self.total_tokens} tokens, got shape {array.shape}")
        if self.codebook_size is not None and array.size and int(array.max()) >= self.codebook_size:
            # an index past the codebook would be an IndexError deep inside the embedding
            raise SkipSample("corrupt", f"token index {int(array.max())} outside the {self.codebook_size}-code book")
        return torch.from_numpy(array.astype(np.int64)), label


class ScaleSplitCollate:
    """Stack flat indices and split them into the per-scale list the transformer stage consumes."""

    def __init__(self, scales: Sequence[tuple[int, int]]) -> None:
        self.scales = [(int(h), int(w)) for h, w in scales]

    def __call__(self, items: list[torch.Tensor]) -> list[torch.Tensor]:
        return split_scales(stack_collate(items), self.scales)
