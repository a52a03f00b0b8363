"""loom-samplers: k-diffusion-family samplers, sigma schedules, CFG guiders and the
KSampler / custom-sampling nodes, reproducing ComfyUI's results for the same seed.

Layout: :mod:`.samplers` (the algorithms, one function each, k-diffusion shaped),
:mod:`.schedulers` (sigma schedules), :mod:`.noise` (seeded noise), :mod:`.brownian` (the SDE
samplers' Brownian tree), :mod:`.conditioning_batches` (conditioning resolved and evaluated in
batches), :mod:`.guiders` (CFG guiders and the denoiser samplers call),
:mod:`.model_interface` (what this plugin asks of a MODEL, and the memory manager),
:mod:`.ksampler` (the sampling run shared by every node), :mod:`.nodes` (the nodes) and
:mod:`.plugin` (the hook implementations).
"""

__version__ = "0.1.0"
