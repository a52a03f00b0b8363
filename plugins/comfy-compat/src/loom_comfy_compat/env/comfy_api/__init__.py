"""ComfyUI's ``comfy_api`` package, provided by loom-comfy-compat (``latest`` and ``v0_0_2``)."""
