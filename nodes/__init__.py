"""Edit-friendly DDPM inversion: the algorithm (pure modules) and its ComfyUI nodes (comfy_nodes)."""
