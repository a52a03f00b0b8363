"""ComfyUI's ``comfy`` package (loom-comfy-compat): ``model_management``, ``utils``,
``cli_args``, ``samplers`` and ``comfy_types`` are provided; other submodules import as
stand-ins whose names fail on use."""
