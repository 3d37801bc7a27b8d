"""Edit-friendly DDPM inversion and editing for ComfyUI.

Huberman-Spiegelglas, Kulikov, Michaeli, "An Edit Friendly DDPM Noise Space: Inversion and
Manipulations", CVPR 2024. The ComfyUI nodes load only inside a ComfyUI host; outside it the package
still imports, so tools and tests can use the pure modules under `nodes/`.
"""

WEB_DIRECTORY = "./web"

try:
    import comfy_api.latest  # noqa: F401  (present only inside a ComfyUI host)
except ImportError:
    try:
        import comfy  # noqa: F401  (a ComfyUI host, but one without the V3 node API)
    except ImportError:
        pass
    else:
        import logging

        logging.getLogger(__name__).warning("Edit-Friendly DDPM nodes not loaded: they need ComfyUI 0.3.75 or newer (comfy_api.latest, the V3 node API).")
else:
    # ComfyUI imports this file as a package. A tool that loads it as a lone module (pytest does when the
    # checkout's folder name is not a Python identifier, e.g. "edit-friendly-ddpm") has no package to
    # import the nodes relative to, and needs none.
    if __package__:
        from .nodes.comfy_nodes import comfy_entrypoint  # noqa: F401
