"""Style models (the STYLE_MODEL socket): Flux Redux.

A Redux file holds two linear layers, ``redux_up`` (SigLIP width -> 3 x text width) and
``redux_down`` (-> text width); ComfyUI's ``ReduxImageEncoder`` runs
``redux_down(silu(redux_up(siglip_last_hidden_state)))``, one text token per image patch.
:func:`apply_style` is ``StyleModelApply``: the tokens (times ``strength`` for
``multiply``) are appended to every conditioning entry's text tokens, and for
``attn_bias`` (or when an ``attention_mask`` is already there) the entry gets ComfyUI's
``attention_mask`` with ``log(strength)`` on the columns of the new tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from loom.errors import LoomError, ModelFileError
from loom.memory import (
    LoadPolicy,
    MemoryManager,
    ModelHandle,
    build_on_meta,
    cpu_device,
    load_into_module,
    open_safetensors,
    ops,
)
from loom.types import CheckpointHeader

REDUX_KEYS = ("redux_up.weight", "redux_up.bias", "redux_down.weight", "redux_down.bias")


@attrs.frozen
class ReduxConfig:
    """Widths of a Redux encoder: image features in, hidden, text tokens out."""

    image_dim: int = 1152
    hidden_dim: int = 12288
    text_dim: int = 4096


class ReduxEncoder(nn.Module):
    """Flux Redux: SigLIP patch features -> Flux text-token space (T5 width)."""

    def __init__(self, config: ReduxConfig) -> None:
        super().__init__()
        self.config = config
        self.redux_up = ops.Linear(config.image_dim, config.hidden_dim)
        self.redux_down = ops.Linear(config.hidden_dim, config.text_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.redux_down(F.silu(self.redux_up(features)))


class StyleModel:
    """The STYLE_MODEL socket value: a Redux encoder handle and the file it came from."""

    def __init__(
        self, handle: ModelHandle, config: ReduxConfig, path: Path, memory: MemoryManager | None
    ) -> None:
        self.handle = handle
        self.config = config
        self.path = path
        self.memory = memory if memory is not None else MemoryManager(cpu_device())

    @torch.inference_mode()
    def get_cond(self, clip_vision_output: Any) -> torch.Tensor:
        """Style tokens ``[B, T, text_dim]`` (float32, CPU) from a CLIP_VISION_OUTPUT."""
        features = clip_vision_output["last_hidden_state"]
        if features.shape[-1] != self.config.image_dim:
            raise LoomError(
                f"StyleModelApply: input 'clip_vision_output' is {features.shape[-1]} wide, "
                f"but style model {self.path.name} reads {self.config.image_dim}-wide "
                "SigLIP features",
                hint="encode the image with the SigLIP vision model Redux was trained on "
                "(sigclip_vision_patch14_384.safetensors)",
            )
        self.memory.load([self.handle])
        target = self.handle.compute_target
        out = self.handle.module(features.to(target.device, target.dtype))
        return out.float().cpu()


def redux_config(header: CheckpointHeader) -> ReduxConfig:
    """The Redux widths in ``header``; :class:`ModelFileError` for any other style model."""
    if not header.has(*REDUX_KEYS):
        raise ModelFileError(
            f"StyleModelLoader: input 'style_model_name': {header.path.name} is not a "
            "style model Loom can load",
            hint=_style_hint(header),
        )
    up = header.tensors["redux_up.weight"].shape
    down = header.tensors["redux_down.weight"].shape
    return ReduxConfig(image_dim=up[1], hidden_dim=up[0], text_dim=down[0])


def _style_hint(header: CheckpointHeader) -> str:
    if any(key.startswith("style_embedding") for key in header.tensors):
        return (
            "this is an SD1.x T2I-Adapter style model (style_embedding); Loom reads Flux Redux "
            "style models (redux_up / redux_down) only"
        )
    return "expected a Flux Redux file (redux_up.* and redux_down.* keys), such as flux1-redux-dev"


def load_style_model(header: CheckpointHeader, memory: MemoryManager | None = None) -> StyleModel:
    config = redux_config(header)
    tensors = open_safetensors(header.path)
    state = {key: tensors[key] for key in REDUX_KEYS}
    encoder = build_on_meta(ReduxEncoder, config)
    load_into_module(encoder, state, LoadPolicy(), source=header.path.name)
    handle = ModelHandle(encoder.eval(), name="flux-redux")
    return StyleModel(handle, config, header.path, memory)


# --- StyleModelApply -------------------------------------------------------------------


def apply_style(
    conditioning: list,
    tokens: torch.Tensor,
    strength: float,
    strength_type: str,
    source: str = "style model",
) -> list:
    """Append style ``tokens`` ``[B, T, D]`` (flattened into one row) to each entry."""
    row = tokens.flatten(0, 1).unsqueeze(0)
    if strength_type == "multiply":
        row = row * strength
    n = row.shape[1]
    out = []
    for text, options in conditioning:
        if text.shape[-1] != row.shape[-1]:
            raise LoomError(
                f"StyleModelApply: input 'conditioning' has {text.shape[-1]}-wide tokens, but "
                f"{source} makes {row.shape[-1]}-wide ones (Flux Redux: 4096, Flux's T5)",
                hint="apply a Redux style model to a Flux text conditioning",
            )
        options = dict(options)
        if "attention_mask" in options or (strength_type == "attn_bias" and strength != 1.0):
            bias = strength if strength_type == "attn_bias" else 1.0
            options["attention_mask"], options["attention_mask_img_shape"] = _grown_mask(
                options, text, n, bias
            )
        style = row.to(text.device, text.dtype).expand(text.shape[0], -1, -1)
        out.append([torch.cat((text, style), dim=1), options])
    return out


def _grown_mask(
    options: dict, text: torch.Tensor, n: int, strength: float
) -> tuple[torch.Tensor, Any]:
    """ComfyUI's attention bias: the ``[B, txt+ref, txt+ref]`` mask grown by ``n`` style
    tokens after the text ones, their columns set to ``log(strength)`` (``-inf`` at 0)."""
    # float32 log as ComfyUI takes it (log(0) = -inf), then stored in the float16 mask
    bias = torch.log(torch.tensor([strength], dtype=torch.float32))
    ref_shape = options.get("attention_mask_img_shape", (1, 1))
    n_ref = ref_shape[0] * ref_shape[1]
    n_txt = text.shape[1]
    batch = text.shape[0]
    mask = options.get("attention_mask")
    if mask is None:
        mask = torch.zeros((batch, n_txt + n_ref, n_txt + n_ref), dtype=torch.float16)
    if mask.dtype == torch.bool:
        mask = torch.log(mask.to(torch.float16))
    size = n_txt + n + n_ref
    grown = torch.zeros((batch, size, size), dtype=torch.float16)
    new = slice(n_txt, n_txt + n)
    after = slice(n_txt + n, None)
    grown[:, :n_txt, :n_txt] = mask[:, :n_txt, :n_txt]
    grown[:, :n_txt, after] = mask[:, :n_txt, n_txt:]
    grown[:, after, :n_txt] = mask[:, n_txt:, :n_txt]
    grown[:, after, after] = mask[:, n_txt:, n_txt:]
    grown[:, :n_txt, new] = bias
    grown[:, after, new] = bias
    return grown.to(text.device), ref_shape
