"""A Flux ControlNet file (InstantX/diffusers, XLabs or MistoLine layout) -> a
:class:`FluxControlNetModel`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
from loom_flux.convert import Source
from loom_flux.dit import PATCH

from loom.memory import LoadPolicy, ModelHandle, build_on_meta, load_into_module
from loom_controlnet.flux_model import (
    FluxControlNet,
    FluxControlNetConfig,
    PlannedView,
    flux_controlnet_config,
    instantx_plan,
    mistoline_file_key,
)

log = logging.getLogger(__name__)


@attrs.frozen
class FluxControlNetModel:
    """A loaded Flux ControlNet (a CONTROL_NET socket value). ``control_type``: the mode a
    union file runs in (``SetUnionControlNetType``; None: no mode token)."""

    handle: ModelHandle
    config: FluxControlNetConfig
    file: str
    control_type: int | None = None

    @property
    def module(self) -> FluxControlNet:
        return self.handle.module  # type: ignore[return-value]

    @property
    def hint_channels(self) -> int:
        """The apply node's image: RGB for both kinds (InstantX encodes it with the VAE)."""
        return 3

    @property
    def needs_vae(self) -> bool:
        return self.config.latent_input

    @property
    def concat_mask(self) -> bool:
        """Whether the hint latent carries an extra mask channel (AliMama's inpainting files):
        ``ControlNetInpaintingAliMamaApply`` then masks the image and supplies the channel."""
        latent_channels = self.config.dit.in_channels // (PATCH * PATCH)
        return self.config.latent_input and self.config.hint_latent_channels > latent_channels


def load_flux_controlnet(
    state: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], file: str
) -> FluxControlNetModel:
    config = flux_controlnet_config(shapes)
    module = build_on_meta(FluxControlNet, config)
    if config.latent_input:
        plan = instantx_plan(config)
    else:
        rename = mistoline_file_key if config.mistoline else str
        plan = {k: Source((rename(k),)) for k in module.state_dict()}
    tensors = PlannedView(state, plan)
    used = tensors.used()
    load_into_module(module, tensors, LoadPolicy(missing="error", unexpected="ignore"), source=file)
    module.eval()
    unused = sorted(set(state.keys()) - used)
    if unused:
        log.warning(
            "%s: %d keys of the %s Flux ControlNet were not used: %s",
            file,
            len(unused),
            config.kind,
            ", ".join(unused[:8]),
        )
    return FluxControlNetModel(ModelHandle(module, name=f"controlnet:{file}"), config, file)
