"""The one declaration of the pack's custom socket type."""

from comfy_api.latest import io

NOISE_MAPS_TYPE = "EF_NOISE_MAPS"

NoiseMapsSocket = io.Custom(NOISE_MAPS_TYPE)
"""Carries a `NoiseMaps` object from the inversion to transforms and samplers."""
