"""Models: the VAR transformer (and its sampling functions, presets) and the multi-scale VQ-VAE tokenizer."""

from varkit.models import presets  # noqa: F401  (registers the MODELS and TOKENIZERS presets)
from varkit.models.var import VAR, GenerationOutput, sample_images
from varkit.models.var_presets import VAR_PRESETS, var_preset
from varkit.models.vqvae import VQVAE, VQVAE_PRESETS, build_vqvae, vqvae_preset

__all__ = [
    "VAR",
    "VAR_PRESETS",
    "VQVAE",
    "VQVAE_PRESETS",
    "GenerationOutput",
    "build_vqvae",
    "sample_images",
    "var_preset",
    "vqvae_preset",
]
