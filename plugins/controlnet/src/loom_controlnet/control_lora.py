"""Control-LoRAs (Stability AI's ``control-lora`` files, marked by a ``lora_controlnet`` key).

Such a file holds only part of a ControlNet: the hint encoder, zero convolutions and a few
layers in full, and low-rank ``up`` / ``down`` pairs for the encoder's convolutions and
linear layers. The rest is the diffusion model's own UNet encoder. As in ComfyUI, the
ControlNet is therefore built when sampling starts, from the model being sampled: its UNet
weights, replaced where the file has a full tensor, plus ``up.flatten(1) @ down.flatten(1)``
where the file has a pair (no alpha, no scale).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch

from loom.errors import LoomError
from loom.memory import LoadPolicy, ModelHandle, build_on_meta, load_into_module
from loom.types import ControlResiduals, ControlSignal
from loom_controlnet.loader import ControlNetModel
from loom_controlnet.model import ControlNet, ControlNetConfig
from loom_controlnet.signal import ControlNetSignal, chained_models

MARKER = "lora_controlnet"


@attrs.frozen
class ControlLoraModel:
    """A loaded control-LoRA file (a CONTROL_NET socket value); ``weights`` stay mapped."""

    weights: Mapping[str, torch.Tensor]
    file: str
    hint_channels: int
    control_type: int | None = None


def build_controlnet(lora: ControlLoraModel, model: Any, applied_by: str) -> ControlNetModel:
    """The ControlNet of ``lora`` on the UNet of ``model`` (weights copied to the CPU)."""
    unet = getattr(model, "module", None)
    config = getattr(unet, "config", None)
    if unet is None or not hasattr(config, "num_res_blocks"):
        raise LoomError(
            f"{applied_by}: input 'control_net' ({lora.file}) is a control-LoRA, which needs "
            f"an LDM UNet model (SD1.x, SD2.x, SDXL), not {type(model).__name__}"
        )
    control_config = ControlNetConfig(config, lora.hint_channels, type(unet))
    module = build_on_meta(ControlNet, control_config)
    base = unet.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key in module.state_dict():
        layer = key.rpartition(".")[0]
        reference = base.get(key)
        if key in lora.weights:
            tensor = lora.weights[key]
            state[key] = tensor if reference is None else tensor.to(reference.dtype)
            continue
        if reference is None:
            raise LoomError(
                f"{applied_by}: input 'control_net' ({lora.file}) has no weight {key} and the "
                "model has none either: the control-LoRA was made for another model family"
            )
        weight = reference.detach().to("cpu")
        if key.endswith(".weight") and f"{layer}.up" in lora.weights:
            up, down = lora.weights[f"{layer}.up"], lora.weights[f"{layer}.down"]
            delta = up.flatten(1).float() @ down.flatten(1).float()
            if delta.numel() != weight.numel():
                raise LoomError(
                    f"{applied_by}: input 'control_net' ({lora.file}): {layer} does not match "
                    "the model's layer; the control-LoRA was made for another model"
                )
            weight = (weight.float() + delta.reshape(weight.shape)).to(weight.dtype)
        state[key] = weight
    load_into_module(
        module, state, LoadPolicy(missing="error", unexpected="ignore"), source=lora.file
    )
    module.eval()
    return ControlNetModel(
        ModelHandle(module, name=f"control-lora:{lora.file}"), control_config, lora.file
    )


@attrs.define(eq=False)
class ControlLoraSignal:
    """A control-LoRA bound to a hint: a :class:`ControlNetSignal` made for the model it is
    sampled with (remade for another model, or the same one with other patches); its handle
    is one of :meth:`models`, so the memory manager places it."""

    control: ControlLoraModel
    hint: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: ControlSignal | None = None
    applied_by: str = "ControlNetApplyAdvanced"
    _built: tuple[tuple[int, Any], ControlNetSignal] | None = attrs.field(default=None, init=False)

    def models(self, model: Any) -> list[Any]:
        """The ControlNet built for ``model`` and the previous signals' handles; before
        ``model`` is loaded only the previous ones (the ControlNet is built from the loaded
        model's weights, its patches applied)."""
        if not getattr(model, "is_loaded", True):
            return list(self.previous.models(model)) if self.previous is not None else []
        return chained_models(self.signal_for(model).control.handle, self.previous, model)

    def residuals(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: Mapping[str, Any],
        model: Any,
        batched_number: int,
    ) -> ControlResiduals | None:
        return self.signal_for(model).residuals(x, sigma, cond, model, batched_number)

    def signal_for(self, model: Any) -> ControlNetSignal:
        signature = getattr(model, "patch_signature", None)
        key = (id(getattr(model, "module", model)), signature() if callable(signature) else ())
        if self._built is None or self._built[0] != key:
            control = build_controlnet(self.control, model, self.applied_by)
            signal = ControlNetSignal(
                control,
                self.hint,
                self.strength,
                self.start_percent,
                self.end_percent,
                self.previous,
                self.applied_by,
            )
            self._built = (key, signal)
        return self._built[1]
