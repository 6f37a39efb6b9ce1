"""``tiny``: a small seeded random convolutional feature extractor for tests and demos (not comparable to FID)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.evaluation.features import Features, check_uint8_images, extract_features, file_sha256
from varkit.registry import FEATURE_EXTRACTORS

__all__ = ["TinyExtractor"]

logger = logging.getLogger(__name__)


@FEATURE_EXTRACTORS.register("tiny")
class TinyExtractor(nn.Module):
    """A small seeded random convolutional network: fast features for tests and demos (not comparable to FID).

    Random convolutional features still separate image distributions (colour, texture, layout statistics), which is
    all a smoke test or a relative comparison on demo data needs. A random classifier head, however, gives nearly
    uniform predictions (IS ≈ 1); ``fit_on`` (labelled image shards, e.g. the demo's ``train/``) fits the head by
    logistic regression on up to ``fit_images`` images at construction, so the Inception Score becomes meaningful
    for that dataset. ``weights``: optional local file holding a state dict of this module; otherwise the weights
    are drawn from ``seed``.

    Like the FID Inception network it also outputs ``spatial`` features for sFID: the first 7 channels of its
    second convolution's map (8×8 at 32 px input), flattened channels-last (448 values).
    """

    spatial_channels = 7

    def __init__(
        self,
        *,
        feature_dim: int = 64,
        num_classes: int = 10,
        input_size: int = 32,
        width: int = 32,
        seed: int = 0,
        weights: str | Path | None = None,
        fit_on: str | list[str] | None = None,
        fit_images: int = 2000,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.input_size = input_size
        self.seed = seed
        self.spatial_dim = self.spatial_channels * (input_size // 4) ** 2
        # True once the head is fitted on a dataset: its argmax is then a prediction of that dataset's labels
        self.dataset_classifier = False
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, feature_dim, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(feature_dim, num_classes)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in self.parameters():
                # fan-in scaled normal draws: features neither vanish nor explode through the ReLUs
                fan_in = parameter[0].numel() if parameter.ndim > 1 else 1
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
        self.weights_sha256 = "seeded"
        if weights is not None:
            self.weights_sha256 = file_sha256(weights)
            from varkit.safe_load import load_torch_file

            self.load_state_dict(load_torch_file(weights, what="evaluator weights file"))
        self.eval().requires_grad_(False)
        if fit_on is not None:
            from varkit.data.shards import expand_urls
            from varkit.evaluation.shard_images import image_batches, iter_shard_samples

            samples = list(iter_shard_samples(expand_urls(fit_on), input_size, limit=fit_images))
            labels = torch.tensor([label for _, label in samples])
            pool, _ = extract_features(self, image_batches((image for image, _ in samples), 256))
            self.fit_classifier(pool, labels)
            self.dataset_classifier = True

    @property
    def fingerprint(self) -> str:
        return (
            f"tiny:dim={self.feature_dim}:classes={self.num_classes}:size={self.input_size}:"
            f"width={self.body[0].out_channels}:seed={self.seed}:weights={self.weights_sha256}"
        )

    def fit_classifier(self, pool: Tensor, labels: Tensor, *, l2: float = 1e-3, steps: int = 100) -> None:
        """Fit the classifier head to ``(n, d)`` pool features and labels: L2-regularised logistic regression.

        Solved with L-BFGS on standardised features (well conditioned), then folded back into the linear layer.
        The fingerprint then names a hash of the fitted head, so statistics of different fits never mix.
        """
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {labels.min()}..{labels.max()}")
        x = pool.double()
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        x = (x - mean) / std
        weight = torch.zeros(self.num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(self.num_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

        def objective() -> Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight.T + bias, labels) + l2 * weight.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(objective)
        with torch.no_grad():
            folded = weight / std
            self.classifier.weight.copy_(folded)
            self.classifier.bias.copy_(bias - folded @ mean)
        head = torch.cat([self.classifier.weight.flatten(), self.classifier.bias]).numpy().tobytes()
        self.weights_sha256 = f"{self.weights_sha256}+head-{hashlib.sha256(head).hexdigest()[:16]}"
        logger.info("fitted the tiny extractor's classifier on %d images", len(labels))

    def forward(self, images: Tensor) -> Features:
        check_uint8_images(images)
        x = images.to(self.classifier.weight.dtype) / 127.5 - 1.0
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        mid = self.body[:4](x)
        spatial = mid[:, : self.spatial_channels].permute(0, 2, 3, 1).flatten(1)
        pool = self.body[4:](mid).mean(dim=(2, 3))
        return Features(pool=pool.float(), logits=self.classifier(pool).float(), spatial=spatial.float())
