"""Experiments built on varkit's stages (the scaling-law study)."""
