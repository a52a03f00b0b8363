"""Loom plugin: weight adapters (LoRA, LoCon, LoHa, LoKr, DoRA, diff) and LoRA loader nodes.

A LoRA file becomes :class:`loom.memory.WeightPatch` objects queued on cloned model handles
(:mod:`loom_lora.loader`); the memory manager applies them in its device's merge dtype
(float32 on the CPU, float16 where ComfyUI merges in fp16) when the model is loaded for
compute and puts the base weights back afterwards.
"""

__version__ = "0.1.0"
