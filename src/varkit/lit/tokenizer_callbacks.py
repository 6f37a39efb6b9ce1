"""Tokenizer-stage callbacks: the input-vs-reconstruction image grid (VAR paper, Sec. 4, tokenizer quality).

:class:`ReconstructionGrid` takes the first validation batch's images and reconstructions (returned by
:meth:`varkit.lit.tokenizer.TokenizerModule.validation_step`), tiles them as pairs of rows (inputs above their
reconstructions) and logs the grid through the configured logger: ``log_image`` where the logger has it (W&B),
``add_image`` for TensorBoard, and a PNG file under ``<run>/images/`` otherwise (CSV logger, no logger).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

__all__ = ["ReconstructionGrid", "image_grid"]

logger = logging.getLogger(__name__)


def image_grid(rows: list[Tensor], padding: int = 2, columns: int | None = None) -> np.ndarray:
    """Tile image batches in [-1, 1] ``(n, c, H, W)`` as ``uint8 (H', W', 3)``: each batch fills its own rows.

    With ``columns`` the n images of each batch wrap over ``ceil(n / columns)`` rows, and the batches' rows
    interleave (row r of inputs is directly above row r of reconstructions).
    """
    count = rows[0].shape[0]
    columns = columns or count
    bands = math.ceil(count / columns)
    channels, height, width = rows[0].shape[1:]
    total_rows = bands * len(rows)
    canvas = np.full(
        (total_rows * (height + padding) + padding, columns * (width + padding) + padding, 3), 255, dtype=np.uint8
    )
    for b, batch in enumerate(rows):
        pixels = ((batch.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if channels == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        pixels = pixels.permute(0, 2, 3, 1).numpy()
        for i in range(count):
            band, col = divmod(i, columns)
            row = band * len(rows) + b
            top, left = padding + row * (height + padding), padding + col * (width + padding)
            canvas[top : top + height, left : left + width] = pixels[i, :, :, :3]
    return canvas


class ReconstructionGrid(L.Callback):
    """Log an inputs-over-reconstructions grid after every validation run.

    Args:
        columns: images per row (pairs of rows: inputs, then their reconstructions).
        upscale: nearest-neighbour magnification of the PNG (tiny demo images are hard to see at 32 px).
        key: the logged image's name.
    """

    def __init__(self, columns: int = 8, upscale: int = 4, key: str = "val/reconstructions") -> None:
        self.columns = columns
        self.upscale = max(1, int(upscale))
        self.key = key
        self._pending: dict[str, Tensor] | None = None
        #: paths of the PNG files written so far (when the logger cannot take images)
        self.written: list[Path] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and isinstance(outputs, dict) and "reconstructions" in outputs:
            self._pending = {"images": outputs["images"].detach().cpu(), "recon": outputs["reconstructions"].cpu()}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        grid = image_grid([self._pending["images"], self._pending["recon"]], columns=self.columns)
        if self.upscale > 1:
            grid = grid.repeat(self.upscale, axis=0).repeat(self.upscale, axis=1)
        self._pending = None
        step = trainer.global_step
        logged = False
        for run_logger in trainer.loggers:
            if hasattr(run_logger, "log_image"):
                from PIL import Image

                run_logger.log_image(key=self.key, images=[Image.fromarray(grid)], step=step)
                logged = True
            elif hasattr(getattr(run_logger, "experiment", None), "add_image"):
                run_logger.experiment.add_image(self.key, grid, global_step=step, dataformats="HWC")
                logged = True
        if not logged:
            self.written.append(self._write_png(trainer, grid, step))

    def _write_png(self, trainer: L.Trainer, grid: np.ndarray, step: int) -> Path:
        from PIL import Image

        folder = Path(trainer.default_root_dir) / "images"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"reconstructions_step{step:07d}.png"
        Image.fromarray(grid).save(path)
        logger.info("reconstruction grid written to %s", path)
        return path
