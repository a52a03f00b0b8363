"""Core's built-in, model-agnostic nodes: images, latents, masks, loading and saving.

Each module is a built-in plugin (listed in :data:`loom.plugins.BUILTIN_PLUGINS`) that
declares its nodes with ``@loom.node`` and registers them from one ``register_nodes``
hook implementation. Node ids, inputs, defaults and categories are ComfyUI's, so
``/object_info`` and UI workflows line up. Torch is imported inside ``run`` only.
"""
