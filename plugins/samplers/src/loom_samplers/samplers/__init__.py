"""The sampling algorithms, by ComfyUI name, in ComfyUI's ``SAMPLER_NAMES`` order.

Every entry follows :class:`loom.types.Sampler`. :data:`SAMPLER_INFO` declares, for the
samplers that need it, how a sampling run treats them (:class:`loom.types.SamplerInfo`, given
at registration): ``discard_penultimate_sigma`` (dpm_2, dpm_2_ancestral, uni_pc*: one extra
step is scheduled and the second-to-last sigma dropped), ``inpaint_random_noise`` (ddim:
inpainting uses fresh noise for the kept area) and ``needs_uncond`` (the CFG++ samplers read
the unconditional prediction).
"""

from __future__ import annotations

from loom.types import Sampler, SamplerInfo
from loom_samplers.samplers import (
    adams_bashforth,
    cfg_pp,
    dpm_solver,
    dpmpp,
    karras,
    multistep,
    one_shot,
    sa_solver,
    seeds,
    unipc,
)

SAMPLERS: dict[str, Sampler] = {
    "euler": karras.euler,
    "euler_cfg_pp": cfg_pp.euler_cfg_pp,
    "euler_ancestral": karras.euler_ancestral,
    "euler_ancestral_cfg_pp": cfg_pp.euler_ancestral_cfg_pp,
    "heun": karras.heun,
    "heunpp2": karras.heunpp2,
    "exp_heun_2_x0": seeds.exp_heun_2_x0,
    "exp_heun_2_x0_sde": seeds.exp_heun_2_x0_sde,
    "dpm_2": karras.dpm_2,
    "dpm_2_ancestral": karras.dpm_2_ancestral,
    "lms": karras.lms,
    "dpm_fast": dpm_solver.dpm_fast,
    "dpm_adaptive": dpm_solver.dpm_adaptive,
    "dpmpp_2s_ancestral": dpmpp.dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": cfg_pp.dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": dpmpp.dpmpp_sde,
    "dpmpp_sde_gpu": dpmpp.dpmpp_sde_gpu,
    "dpmpp_2m": dpmpp.dpmpp_2m,
    "dpmpp_2m_cfg_pp": cfg_pp.dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": dpmpp.dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": dpmpp.dpmpp_2m_sde_gpu,
    "dpmpp_2m_sde_heun": dpmpp.dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": dpmpp.dpmpp_2m_sde_heun_gpu,
    "dpmpp_3m_sde": dpmpp.dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": dpmpp.dpmpp_3m_sde_gpu,
    "ddpm": one_shot.ddpm,
    "lcm": one_shot.lcm,
    "ipndm": adams_bashforth.ipndm,
    "ipndm_v": adams_bashforth.ipndm_v,
    "deis": adams_bashforth.deis,
    "res_multistep": multistep.res_multistep,
    "res_multistep_cfg_pp": cfg_pp.res_multistep_cfg_pp,
    "res_multistep_ancestral": multistep.res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": cfg_pp.res_multistep_ancestral_cfg_pp,
    "gradient_estimation": multistep.gradient_estimation,
    "gradient_estimation_cfg_pp": cfg_pp.gradient_estimation_cfg_pp,
    "er_sde": multistep.er_sde,
    "seeds_2": seeds.seeds_2,
    "seeds_3": seeds.seeds_3,
    "sa_solver": sa_solver.sa_solver,
    "sa_solver_pece": sa_solver.sa_solver_pece,
    "ddim": karras.ddim,
    "uni_pc": unipc.uni_pc,
    "uni_pc_bh2": unipc.uni_pc_bh2,
}

_DISCARD_PENULTIMATE = SamplerInfo(discard_penultimate_sigma=True)
_CFG_PP = SamplerInfo(needs_uncond=True)

SAMPLER_INFO: dict[str, SamplerInfo] = {
    "dpm_2": _DISCARD_PENULTIMATE,
    "dpm_2_ancestral": _DISCARD_PENULTIMATE,
    "uni_pc": _DISCARD_PENULTIMATE,
    "uni_pc_bh2": _DISCARD_PENULTIMATE,
    "ddim": SamplerInfo(inpaint_random_noise=True),
    **{name: _CFG_PP for name in SAMPLERS if name.endswith("_cfg_pp")},
}
"""The samplers a sampling run treats differently; the others take ``SamplerInfo()``."""

__all__ = ["SAMPLERS", "SAMPLER_INFO"]
