"""Hook implementations of the ``samplers`` plugin: nodes, samplers and schedulers.

Registration is declarations only; the sampler and scheduler modules import torch lazily.
"""

from __future__ import annotations

from collections.abc import Callable

import loom


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    from loom_samplers.nodes import NODES, KSampler, KSamplerAdvanced

    # Where ComfyUI 0.8 defines them: /object_info's python_module (the frontend shows it).
    classic = {KSampler, KSamplerAdvanced}
    for node_class in NODES:
        class_type = node_class.__loom_node__.class_type
        module = "nodes" if node_class in classic else "comfy_extras.nodes_custom_sampler"
        register(node_class, python_module=_ELSEWHERE.get(class_type, module))
    from loom_samplers.cfg_nodes import CFG_NODES

    for node_class, module in CFG_NODES.items():
        register(node_class, python_module=module)
    from loom_samplers.step_cache_nodes import NODES as CACHE_NODES
    from loom_samplers.step_cache_nodes import NODES_EASYCACHE

    for node_class in CACHE_NODES:
        register(node_class, python_module=NODES_EASYCACHE)

    from loom_samplers.fresca import FreSca

    register(FreSca, python_module="comfy_extras.nodes_fresca")


# Sampling nodes ComfyUI 0.8 defines outside nodes_custom_sampler.
_ELSEWHERE = {
    "SamplerEulerCFGpp": "comfy_extras.nodes_advanced_samplers",
    "SamplerLCMUpscale": "comfy_extras.nodes_advanced_samplers",
    "AlignYourStepsScheduler": "comfy_extras.nodes_align_your_steps",
    "GITSScheduler": "comfy_extras.nodes_gits",
    "OptimalStepsScheduler": "comfy_extras.nodes_optimalsteps",
}


@loom.hookimpl
def register_samplers(register: Callable[..., None]) -> None:
    from loom.types import SamplerInfo
    from loom_samplers.samplers import SAMPLER_INFO, SAMPLERS

    for name, sampler in SAMPLERS.items():
        register(name, sampler, SAMPLER_INFO.get(name, SamplerInfo()))


@loom.hookimpl
def register_schedulers(register: Callable[..., None]) -> None:
    from loom_samplers.schedulers import SCHEDULERS

    for name, scheduler in SCHEDULERS.items():
        register(name, scheduler)
