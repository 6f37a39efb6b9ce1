"""Checkpoints: import of the official VAR/VQVAE weights (explicit key maps) and safetensors save/load."""

from varkit.checkpoint.io import convert_official, from_pretrained, load_pretrained, read_config, save_pretrained
from varkit.checkpoint.var import infer_official_var_config, var_from_official, var_state_dict_from_official
from varkit.checkpoint.vqvae import CheckpointKeyError, load_official_vqvae, vqvae_from_official

__all__ = [
    "CheckpointKeyError",
    "convert_official",
    "from_pretrained",
    "infer_official_var_config",
    "load_official_vqvae",
    "load_pretrained",
    "read_config",
    "save_pretrained",
    "var_from_official",
    "var_state_dict_from_official",
    "vqvae_from_official",
]
