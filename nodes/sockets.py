"""The one declaration of the pack's custom socket type."""

from comfy_api.latest import io

NOISE_MAPS_TYPE = "EF_NOISE_MAPS"

NoiseMapsSocket = io.Custom(NOISE_MAPS_TYPE)
"""Carries a `NoiseMaps` object from the inversion to transforms and samplers."""

EDIT_CONCEPTS_TYPE = "EF_EDIT_CONCEPTS"

EditConceptsSocket = io.Custom(EDIT_CONCEPTS_TYPE)
"""Carries a list of `semantic_guidance.EditConcept` from Edit Concept nodes to the Semantic Guidance guider."""
