"""loom-upscale: ComfyUI's ``UpscaleModelLoader`` and ``ImageUpscaleWithModel`` on spandrel.

Upscale model files (ESRGAN / Real-ESRGAN, SwinIR, HAT, DAT, OmniSR, ... as spandrel
detects them) are read as safetensors only; images are upscaled in feathered tiles placed
as ComfyUI places them, starting from the largest tile the memory budget allows.
"""
