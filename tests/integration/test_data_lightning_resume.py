"""A Lightning run resumed from a mid-epoch checkpoint continues the data stream instead of replaying it."""

from __future__ import annotations

import io

import lightning as L
import pytest
import torch
from PIL import Image

from varkit.data import ShardWriter
from varkit.data.modules import LogSkippedSamples, WebDataModule

SIZE = 8


def _png(sample_id: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (sample_id % 256, sample_id // 256, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def _ids(images: torch.Tensor) -> list[int]:
    pixels = ((images[:, :, 0, 0] + 1) * 127.5).round().long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


class Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 10)
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.seen.append(_ids(images))
        return torch.nn.functional.cross_entropy(self.layer(images.mean(dim=(2, 3))), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(tmp_path, max_steps: int, callbacks=()) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
    )


@pytest.mark.slow
@pytest.mark.parametrize("resampled", [False, True])
def test_resume_continues_stream(tmp_path, resampled):
    root = tmp_path / "shards"
    with ShardWriter(root, max_count=8) as writer:
        for i in range(40):
            png = b"not a png" if i == 13 else _png(i)
            writer.write(f"{i:06d}", {"png": png, "cls": str(i % 10).encode()})
    options = dict(image_size=SIZE, mid_reso=1.0, batch_size=3, shuffle_buffer=6, seed=11, resampled=resampled)
    if resampled:
        options["epoch_samples"] = 5 * 3  # 5 batches per epoch
    total_steps, stop = 17, 7  # crosses epoch boundaries in both modes (finite epoch: 13 batches)

    reference = Recorder()
    reference_dm = WebDataModule(str(root), **options)
    _trainer(tmp_path / "ref", total_steps).fit(reference, datamodule=reference_dm)

    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=stop)
    first = Recorder()
    first_dm = WebDataModule(str(root), **options)
    _trainer(tmp_path / "a", stop, [checkpoint, LogSkippedSamples()]).fit(first, datamodule=first_dm)
    path = checkpoint.best_model_path or checkpoint.last_model_path
    assert path

    second = Recorder()
    second_dm = WebDataModule(str(root), **options)
    _trainer(tmp_path / "b", total_steps).fit(second, datamodule=second_dm, ckpt_path=path)

    assert first.seen + second.seen == reference.seen
    assert len(reference.seen) == total_steps
    # the skip counter continues too: the resumed run ends with the uninterrupted run's exact count
    assert first_dm.skip_stats.corrupt <= second_dm.skip_stats.corrupt == reference_dm.skip_stats.corrupt
    if not resampled:
        assert reference_dm.skip_stats.corrupt >= 1  # the finite epoch passed the corrupt sample
