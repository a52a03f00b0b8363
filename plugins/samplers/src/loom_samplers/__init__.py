"""loom-samplers: k-diffusion-family samplers, sigma schedules, CFG guiders and the
KSampler / custom-sampling nodes, reproducing ComfyUI's results for the same seed.

Layout: :mod:`.samplers` (the algorithms, one function each, k-diffusion shaped),
:mod:`.schedulers` (sigma schedules), :mod:`.noise` (seeded noise), :mod:`.guidance`
(conditioning batches and CFG), :mod:`.denoiser` (the MODEL protocol this plugin relies on),
:mod:`.ksampler` (the sampling run shared by every node), :mod:`.nodes` (the nodes) and
:mod:`.plugin` (the hook implementations).
"""

__version__ = "0.1.0"
