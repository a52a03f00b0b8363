"""``comfy.samplers``: ``KSampler.SAMPLERS`` / ``SCHEDULERS`` and the module-level name
lists, read live from the registry (loom-comfy-compat)."""

from loom_comfy_compat.missing import PatchGuard
from loom_comfy_compat.missing import missing as _missing


def _registry_names(kind):
    from loom_comfy_compat.environment import ENV

    registry = ENV.registry_if_ready()
    if registry is None:
        return []
    return registry.sampler_names() if kind == "samplers" else registry.scheduler_names()


class _LiveNames:
    def __get__(self, instance, owner):
        return _registry_names(self.kind)

    def __init__(self, kind):
        self.kind = kind


class KSampler(metaclass=PatchGuard):
    """Only the name lists: sampling itself goes through Loom's nodes (nodes.common_ksampler).
    Packs adding samplers by assigning to ``SAMPLERS`` are refused (register a sampler
    through a Loom plugin instead)."""

    _loom_guarded = True

    SAMPLERS = _LiveNames("samplers")
    SCHEDULERS = _LiveNames("schedulers")


# ComfyUI runs these three outside its k-diffusion wrapper, so they appear in SAMPLER_NAMES
# but not in KSAMPLER_NAMES; packs that build sampler menus from either list rely on that.
_OUTSIDE_KSAMPLER = ("ddim", "uni_pc", "uni_pc_bh2")


def __getattr__(name):
    if name == "SAMPLER_NAMES":
        return _registry_names("samplers")
    if name == "KSAMPLER_NAMES":
        return [n for n in _registry_names("samplers") if n not in _OUTSIDE_KSAMPLER]
    if name == "SCHEDULER_NAMES":
        return _registry_names("schedulers")
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    return _missing(__name__, name)


__all__ = ["KSampler"]
