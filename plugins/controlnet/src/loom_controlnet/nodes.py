"""ComfyUI's ControlNet nodes: the loaders, the apply nodes (``ControlNetApply``,
``ControlNetApplyAdvanced``, ``ControlNetInpaintingAliMamaApply``) and ``SetUnionControlNetType``.

The apply nodes do not touch the model: they bind the CONTROL_NET to a hint image in a
:class:`~loom_controlnet.signal.ControlNetSignal` and put it in every conditioning entry's
options under ``control``, chained to the entry's previous signal. Entries that had the same
previous signal get the same new one, so positive and negative keep batching together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

import loom
from loom.errors import LoomError, ModelFileError
from loom.folders import ModelFileChoices
from loom.types import Conditioning, ControlNet, Image, Mask, Model, Vae

if TYPE_CHECKING:
    from loom_controlnet.signal import ControlNetSignal

FOLDER = "controlnet"
STRENGTH = {"min": 0.0, "max": 10.0, "step": 0.01}
PERCENT = {"min": 0.0, "max": 1.0, "step": 0.001}
#: ComfyUI's ``UNION_CONTROLNET_TYPES`` (name -> the union model's control type index).
UNION_CONTROLNET_TYPES = {
    "openpose": 0,
    "depth": 1,
    "hed/pidi/scribble/ted": 2,
    "canny/lineart/anime_lineart/mlsd": 3,
    "normal": 4,
    "segment": 5,
    "tile": 6,
    "repaint": 7,
}


#: The ``control_net_name`` combo: files in the ``controlnet`` folder (live).
controlnet_files = ModelFileChoices(FOLDER)


def resolve_controlnet(ctx: loom.RunContext, name: str) -> Path:
    return ctx.require_runtime("the controlnet model folder").folders.require(FOLDER, name)


def _load(ctx: loom.RunContext, node: str, name: str, model: Any = None) -> Any:
    from loom_controlnet.loader import load_controlnet

    path = resolve_controlnet(ctx, name)
    try:
        return load_controlnet(path, model)
    except ModelFileError as error:
        raise ModelFileError(
            f"{node}: input 'control_net_name': {error.message}", hint=error.hint
        ) from None


@loom.node("ControlNetLoader", category="loaders", display_name="Load ControlNet Model")
class ControlNetLoader:
    control_net_name: str = loom.ui.combo(controlnet_files)

    def run(self, ctx: loom.RunContext) -> ControlNet:
        return _load(ctx, "ControlNetLoader", self.control_net_name)


@loom.node("DiffControlNetLoader", category="loaders", display_name="Load ControlNet Model (diff)")
class DiffControlNetLoader:
    model: Model
    control_net_name: str = loom.ui.combo(controlnet_files)

    def run(self, ctx: loom.RunContext) -> ControlNet:
        return _load(ctx, "DiffControlNetLoader", self.control_net_name, self.model)


def _require_vae(node: str, control: Any, vae: Any) -> None:
    """A ControlNet whose hint is a VAE latent (InstantX Flux) needs the node's ``vae``."""
    if getattr(control, "needs_vae", False) and vae is None:
        where = "input 'vae'" if node == "ControlNetApplyAdvanced" else "input 'control_net'"
        raise LoomError(
            f"{node}: {where}: the ControlNet {control.file} takes a VAE-encoded hint "
            "but no VAE is connected",
            hint="use ControlNetApplyAdvanced and connect the model's VAE to its 'vae' input",
        )


def _hint(node: str, image: Any, control: Any) -> Any:
    """IMAGE ``[B, H, W, C]`` -> hint ``[B, C, H, W]``, its channels checked (a
    single-channel adapter averages the channels itself, as ComfyUI)."""
    hint = image.movedim(-1, 1)
    if hint.shape[1] != control.hint_channels and control.hint_channels != 1:
        raise LoomError(
            f"{node}: input 'image' has {hint.shape[1]} channels but the ControlNet "
            f"{control.file} takes {control.hint_channels}-channel hints",
            hint="convert the image to RGB (e.g. SplitImageWithAlpha) before applying",
        )
    return hint


def bind(control: Any, hint: Any, **options: Any) -> Any:
    """The control signal of a CONTROL_NET value bound to ``hint`` (``vae``: the apply
    node's, used by ControlNets whose hint is a latent)."""
    # the model code (and torch) loads when a ControlNet is applied, not at registration
    from loom_controlnet.adapter_signal import AdapterSignal
    from loom_controlnet.control_lora import ControlLoraModel, ControlLoraSignal
    from loom_controlnet.loader import AdapterModel
    from loom_controlnet.signal import ControlNetSignal

    vae = options.pop("vae", None)
    if getattr(control, "needs_vae", None) is not None:
        from loom_controlnet.flux_signal import FluxControlNetSignal

        return FluxControlNetSignal(control, hint, vae=vae, **options)
    if isinstance(control, AdapterModel):
        return AdapterSignal(control, hint, **options)
    if isinstance(control, ControlLoraModel):
        return ControlLoraSignal(control, hint, **options)
    return ControlNetSignal(control, hint, **options)


def apply_control(
    conditionings: list[list],
    signal_for: Callable[[Any], ControlNetSignal],
    apply_to_uncond: bool,
) -> list[list]:
    """New conditioning lists whose entries carry ``signal_for(previous signal)``; one new
    signal per distinct previous signal, shared by every entry that had it."""
    made: dict[int, ControlNetSignal] = {}
    out = []
    for conditioning in conditionings:
        entries = []
        for tensor, options in conditioning:
            previous = options.get("control")
            key = id(previous)
            if key not in made:
                made[key] = signal_for(previous)
            entries.append(
                [
                    tensor,
                    {**options, "control": made[key], "control_apply_to_uncond": apply_to_uncond},
                ]
            )
        out.append(entries)
    return out


@loom.outputs
class ControlNetApplyOutputs:
    positive: Conditioning = loom.output(name="positive")
    negative: Conditioning = loom.output(name="negative")


@loom.node(
    "ControlNetApplyAdvanced", category="conditioning/controlnet", display_name="Apply ControlNet"
)
class ControlNetApplyAdvanced:
    positive: Conditioning
    negative: Conditioning
    control_net: ControlNet
    image: Image
    strength: float = loom.ui.float(1.0, **STRENGTH)
    start_percent: float = loom.ui.float(0.0, **PERCENT)
    end_percent: float = loom.ui.float(1.0, **PERCENT)
    vae: Vae = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> ControlNetApplyOutputs:
        if self.strength == 0:
            return ControlNetApplyOutputs(positive=self.positive, negative=self.negative)
        _require_vae("ControlNetApplyAdvanced", self.control_net, self.vae)
        hint = _hint("ControlNetApplyAdvanced", self.image, self.control_net)

        def signal_for(previous: Any) -> ControlNetSignal:
            return bind(
                self.control_net,
                hint,
                strength=self.strength,
                start_percent=self.start_percent,
                end_percent=self.end_percent,
                previous=previous,
                applied_by="ControlNetApplyAdvanced",
                vae=self.vae,
            )

        positive, negative = apply_control([self.positive, self.negative], signal_for, False)
        return ControlNetApplyOutputs(positive=positive, negative=negative)


@loom.node(
    "ControlNetApply",
    category="conditioning/controlnet",
    display_name="Apply ControlNet (OLD)",
    deprecated=True,
)
class ControlNetApply:
    conditioning: Conditioning
    control_net: ControlNet
    image: Image
    strength: float = loom.ui.float(1.0, **STRENGTH)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        if self.strength == 0:
            return self.conditioning
        _require_vae("ControlNetApply", self.control_net, None)
        hint = _hint("ControlNetApply", self.image, self.control_net)

        def signal_for(previous: Any) -> ControlNetSignal:
            return bind(
                self.control_net,
                hint,
                strength=self.strength,
                previous=previous,
                applied_by="ControlNetApply",
            )

        [conditioning] = apply_control([self.conditioning], signal_for, True)
        return conditioning


@loom.node("ControlNetInpaintingAliMamaApply", category="conditioning/controlnet", v3=True)
class ControlNetInpaintingAliMamaApply:
    # ControlNetApplyAdvanced with a VAE and an inpainting mask: for a mask-channel ControlNet
    # (AliMama's Flux inpainting files) the masked part of the image is blacked out and the
    # inverted mask becomes the hint latent's extra channel; other ControlNets get the plain
    # image. (no docstring: it would become the node's description, which ComfyUI's lacks)

    positive: Conditioning
    negative: Conditioning
    control_net: ControlNet
    vae: Vae
    image: Image
    mask: Mask
    strength: float = loom.ui.float(1.0, **STRENGTH)
    start_percent: float = loom.ui.float(0.0, **PERCENT)
    end_percent: float = loom.ui.float(1.0, **PERCENT)

    def run(self, ctx: loom.RunContext) -> ControlNetApplyOutputs:
        node = "ControlNetInpaintingAliMamaApply"
        if self.strength == 0:
            return ControlNetApplyOutputs(positive=self.positive, negative=self.negative)
        image, extra = self.image, {}
        if getattr(self.control_net, "concat_mask", False):
            from loom_controlnet.flux_signal import inpainting_hint

            masks = self.mask.reshape(-1, self.mask.shape[-2], self.mask.shape[-1]).shape[0]
            if masks not in (1, image.shape[0]):
                raise LoomError(
                    f"{node}: input 'mask' holds {masks} masks for the {image.shape[0]} images "
                    f"of input 'image' (ControlNet {self.control_net.file})",
                    hint="give one mask, or one per image",
                )
            image, extra["mask"] = inpainting_hint(image, self.mask)
        hint = _hint(node, image, self.control_net)

        def signal_for(previous: Any) -> ControlNetSignal:
            return bind(
                self.control_net,
                hint,
                strength=self.strength,
                start_percent=self.start_percent,
                end_percent=self.end_percent,
                previous=previous,
                applied_by=node,
                vae=self.vae,
                **extra,
            )

        positive, negative = apply_control([self.positive, self.negative], signal_for, False)
        return ControlNetApplyOutputs(positive=positive, negative=negative)


@loom.node("SetUnionControlNetType", category="conditioning/controlnet", v3=True)
class SetUnionControlNetType:
    # the control type of a union ControlNet (auto: the model infers it); others ignore it.
    # (no docstring: it would become the node's description, which ComfyUI's lacks)

    control_net: ControlNet
    type: str = loom.ui.combo(["auto", *UNION_CONTROLNET_TYPES])

    def run(self, ctx: loom.RunContext) -> ControlNet:
        control_type = UNION_CONTROLNET_TYPES.get(self.type)
        return attrs.evolve(self.control_net, control_type=control_type)


NODES: tuple[Callable[..., Any], ...] = (
    ControlNetLoader,
    DiffControlNetLoader,
    ControlNetApply,
    ControlNetApplyAdvanced,
    ControlNetInpaintingAliMamaApply,
    SetUnionControlNetType,
)
#: ComfyUI's ``python_module`` of each node (``nodes`` unless listed).
PYTHON_MODULES = {
    "SetUnionControlNetType": "comfy_extras.nodes_controlnet",
    "ControlNetInpaintingAliMamaApply": "comfy_extras.nodes_controlnet",
}
