"""Loom's Stable Diffusion 1.x family: LDM UNet, CLIP-L text encoder, AutoencoderKL.

Importing the package is cheap; torch and transformers load with the modules that need them.
"""

__version__ = "0.1.0"
