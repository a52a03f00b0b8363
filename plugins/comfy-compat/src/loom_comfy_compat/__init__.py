"""loom-comfy-compat: ComfyUI's V3 node API and the modules custom-node packs import.

When the plugin loads it makes ``comfy_api``, ``comfy``, ``comfy_execution``,
``folder_paths``, ``nodes``, ``server``, ``node_helpers`` and ``latent_preview`` importable
(see :mod:`loom_comfy_compat.finder`); they are written from ComfyUI's documented behaviour
and backed by the Loom runtime the plugin was last given (:mod:`loom_comfy_compat.environment`).
No ComfyUI code is imported or contained.
"""

__version__ = "0.1.0"
