"""ComfyUI's ``HypernetworkLoader``: a clone of an SD1.x/SDXL MODEL whose attention inputs go
through an A1111-format hypernetwork (:mod:`loom_sd15.hypernetwork`)."""

from __future__ import annotations

import loom
from loom.errors import LoomError
from loom.folders import ModelFileChoices
from loom.types import Model

MODULE = "comfy_extras.nodes_hypernetwork"
_NEEDS = "the hypernetworks model folder"

#: The ``hypernetwork_name`` combo: files in the ``hypernetworks`` model folder (live).
hypernetwork_files = ModelFileChoices("hypernetworks")


@loom.node("HypernetworkLoader", category="loaders", v3=True)
class HypernetworkLoader:
    """Apply a hypernetwork to the keys and values of the model's self- and cross-attention."""

    model: Model
    hypernetwork_name: str = loom.ui.combo(hypernetwork_files)
    strength: float = loom.ui.float(1.0, min=-10.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        from loom_sd15.hypernetwork import HypernetworkPatch, load_hypernetwork
        from loom_sd15.unet import AttentionInputPatches

        current = getattr(self.model, "attention_input_patches", False)
        if current is False:
            raise LoomError(
                "HypernetworkLoader: input 'model' "
                f"({getattr(self.model, 'name', type(self.model).__name__)}) is not a UNet "
                "with attention blocks a hypernetwork can patch",
                hint="hypernetworks apply to SD1.x and SDXL models",
            )
        path = ctx.require_runtime(_NEEDS).folders.require("hypernetworks", self.hypernetwork_name)
        try:
            mlps = load_hypernetwork(path)
        except LoomError as error:
            raise LoomError(
                f"HypernetworkLoader: input 'hypernetwork_name': {error.message}",
                hint=error.hint or "save the hypernetwork as .safetensors",
            ) from error
        patch = HypernetworkPatch(mlps, float(self.strength))
        patches = current or AttentionInputPatches()
        patched = self.model.clone()
        patched.attention_input_patches = AttentionInputPatches(
            self_attention=(*patches.self_attention, patch),
            cross_attention=(*patches.cross_attention, patch),
        )
        return patched


NODES = [HypernetworkLoader]
