"""ComfyUI's ``ModelSamplingDiscrete``, ``ModelSamplingContinuousV`` and
``ModelSamplingContinuousEDM``: a clone of the model
with another :mod:`loom.model_sampling` parameterisation (what the network predicts, and the
sigma schedule samplers read from it); and ``ModelComputeDtype``: a clone computing in another
dtype (the handle's ``compute_dtype``, which the memory manager's
:meth:`~loom.memory.MemoryManager.target_for` honours). The weights are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import loom
from loom import ui
from loom.errors import LoomError
from loom.input_checks import check_positive
from loom.types import Model

COMFY_MODULE = "comfy_extras.nodes_model_advanced"
CATEGORY = "advanced/model"
#: ComfyUI's choices; "default" leaves the dtype to the memory manager's policy
COMPUTE_DTYPES = ("default", "fp32", "fp16", "bf16")
DISCRETE_SAMPLINGS = ("eps", "v_prediction", "lcm", "x0", "img_to_img")


def _clone(node: str, model: Any) -> Any:
    if not hasattr(model, "model_sampling") or not hasattr(model, "clone"):
        raise LoomError(f"{node}: input model ({type(model).__name__}) has no model sampling")
    return model.clone()


def discrete_sampling(current: Any, sampling: str, zsnr: bool) -> Any:
    """The discrete parameterisation ``sampling`` over the beta schedule of ``current`` (if it
    is a discrete one; SD1.x's otherwise), rescaled to zero terminal SNR if ``zsnr``."""
    from loom import model_sampling as ms

    kinds = {
        "eps": ms.DiscreteEps,
        "v_prediction": ms.DiscreteV,
        "lcm": ms.DiscreteLCM,
        "x0": ms.DiscreteX0,
        "img_to_img": ms.DiscreteImgToImg,
    }
    schedule = {}
    if isinstance(current, ms.DiscreteEps):
        schedule = {
            "linear_start": current.linear_start,
            "linear_end": current.linear_end,
            "timesteps": current.timesteps,
            "schedule": current.schedule,
        }
    result = kinds[sampling](**schedule)
    if zsnr:
        ms.set_sigmas(result, ms.rescale_zero_terminal_snr(result.sigmas))
    return result


@loom.node("ModelSamplingDiscrete", category=CATEGORY)
class ModelSamplingDiscrete:
    model: Model
    sampling: str = ui.combo(list(DISCRETE_SAMPLINGS))
    zsnr: bool = ui.boolean(False)

    def run(self, ctx: loom.RunContext) -> Model:
        model = _clone("ModelSamplingDiscrete", self.model)
        model.model_sampling = discrete_sampling(model.model_sampling, self.sampling, self.zsnr)
        return model


@loom.node("ModelSamplingContinuousV", category=CATEGORY)
class ModelSamplingContinuousV:
    model: Model
    sampling: str = ui.combo(["v_prediction"])
    sigma_max: float = ui.float(500.0, min=0.0, max=1000.0, step=0.001, round=False)
    sigma_min: float = ui.float(0.03, min=0.0, max=1000.0, step=0.001, round=False)

    def run(self, ctx: loom.RunContext) -> Model:
        from loom.model_sampling import ContinuousV

        check_positive(
            "ModelSamplingContinuousV",
            {"sigma_max": self.sigma_max, "sigma_min": self.sigma_min},
            "the sampling works in log(sigma)",
        )
        model = _clone("ModelSamplingContinuousV", self.model)
        model.model_sampling = ContinuousV(self.sigma_min, self.sigma_max)
        return model


#: ComfyUI's sampling choices: name -> (what the network predicts, sigma_data).
EDM_SAMPLINGS = {
    "v_prediction": ("v_prediction", 1.0),
    "edm": ("edm", 0.5),
    "edm_playground_v2.5": ("edm", 0.5),
    "eps": ("eps", 1.0),
    "cosmos_rflow": ("cosmos_rflow", 1.0),
}


@loom.node("ModelSamplingContinuousEDM", category=CATEGORY)
class ModelSamplingContinuousEDM:
    """A clone of the model sampled on continuous EDM sigmas; ``edm_playground_v2.5`` also
    switches the model to Playground v2.5's latent format (asked of the model's family)."""

    model: Model
    sampling: str = ui.combo(list(EDM_SAMPLINGS))
    sigma_max: float = ui.float(120.0, min=0.0, max=1000.0, step=0.001, round=False)
    sigma_min: float = ui.float(0.002, min=0.0, max=1000.0, step=0.001, round=False)

    def run(self, ctx: loom.RunContext) -> Model:
        from loom.model_sampling import ContinuousEDM

        node = "ModelSamplingContinuousEDM"
        if not self.sigma_min > 0.0 or not self.sigma_max > 0.0:
            raise LoomError(
                f"{node}: sigma_min ({self.sigma_min}) and sigma_max ({self.sigma_max}) must "
                "be above 0 (the schedule is log-spaced)"
            )
        model = _clone(node, self.model)
        prediction, sigma_data = EDM_SAMPLINGS[self.sampling]
        if self.sampling == "edm_playground_v2.5":
            model.latent_format = _latent_format_variant(node, model, self.sampling)
        model.model_sampling = ContinuousEDM(
            self.sigma_min, self.sigma_max, prediction=prediction, sigma_data=sigma_data
        )
        return model


def _latent_format_variant(node: str, model: Any, name: str) -> Any:
    from loom.types import LatentFormatVariants

    found = model.latent_format_variant(name) if isinstance(model, LatentFormatVariants) else None
    if found is None:
        raise LoomError(
            f"{node}: sampling {name!r} needs the model's family to provide that latent "
            f"format; the input model ({getattr(model, 'name', type(model).__name__)}) does not",
            hint="load the checkpoint with the loader of the family it was trained as",
        )
    return found


@loom.node("ModelComputeDtype", category="advanced/debug/model")
class ModelComputeDtype:
    model: Model
    dtype: str = ui.combo(list(COMPUTE_DTYPES))

    def run(self, ctx: loom.RunContext) -> Model:
        from loom.memory import DtypeChoice

        if self.dtype not in COMPUTE_DTYPES or not hasattr(self.model, "compute_dtype"):
            what = (
                f"dtype {self.dtype!r} is not one of {', '.join(COMPUTE_DTYPES)}"
                if self.dtype not in COMPUTE_DTYPES
                else f"input model ({type(self.model).__name__}) is not a model handle"
            )
            raise LoomError(f"ModelComputeDtype: {what}")
        model = self.model.clone()
        model.compute_dtype = DtypeChoice.parse(self.dtype).fixed_dtype
        return model


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in (
        ModelSamplingDiscrete,
        ModelSamplingContinuousV,
        ModelSamplingContinuousEDM,
        ModelComputeDtype,
    ):
        register(node_class, python_module=COMFY_MODULE)
