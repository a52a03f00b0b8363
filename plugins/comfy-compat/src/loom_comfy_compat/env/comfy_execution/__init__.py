"""ComfyUI's ``comfy_execution`` package (loom-comfy-compat)."""
