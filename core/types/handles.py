"""The handle protocols model-family plugins implement (MODEL, CLIP, VAE, saving)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    import torch

    from loom.model_sampling import ModelSampling
    from loom.types.latents import LatentFormat


@runtime_checkable
class ModelLike(Protocol):
    """A denoising model handle (the MODEL socket).

    ``clone()`` must be cheap and share weights; patches and options live on the clone.
    A handle may also carry a ``denoise_mask_function``
    (:class:`loom.samplers.DenoiseMaskFunction`, read with
    :func:`loom.samplers.denoise_mask_function_of`) that masked sampling applies each step,
    and ``guidance`` (:class:`loom.samplers.GuidanceHooks`, read with
    :func:`loom.samplers.guidance_hooks_of`): its pre-CFG, CFG and post-CFG functions.
    """

    model_sampling: ModelSampling
    latent_format: LatentFormat

    def clone(self) -> ModelLike: ...

    def apply_model(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Mapping[str, Any]
    ) -> torch.Tensor:
        """Denoise ``x`` at noise level ``sigma``; returns the denoised estimate x0."""
        ...


@runtime_checkable
class TextContextModel(Protocol):
    """A MODEL handle whose denoiser attends to text conditioning of one width
    (``context_width``: the last dimension of the CONDITIONING tensors it can take, e.g. the
    width of the text encoder its checkpoint ships with). Samplers check conditioning
    against it, so a prompt encoded by another family's text encoder is reported by name
    instead of failing inside the model's attention. ``name`` is what messages call the
    model (its file)."""

    name: str

    @property
    def context_width(self) -> int: ...


class LatentOperationFunction(Protocol):
    """A LATENT_OPERATION value: a rewrite of ``[B, C, H, W]`` latent samples (or of a
    guidance direction, under ``LatentApplyOperationCFG``) into a tensor of the same shape."""

    def __call__(self, latent: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ClipLike(Protocol):
    """A text encoder handle (the CLIP socket)."""

    def clone(self) -> ClipLike: ...

    def encode(self, text: str) -> list:
        """Encode a prompt (with emphasis syntax) into a CONDITIONING list."""
        ...

    def set_last_layer(self, layer: int) -> None:
        """Use hidden states of ``layer`` (negative, from the end) — CLIPSetLastLayer."""
        ...


@attrs.frozen
class TokenizerPadding:
    """How a text encoder's tokenizer pads a prompt (ComfyUI's ``<encoder>_min_padding`` and
    ``<encoder>_min_length`` tokenizer options): ``min_padding`` pad tokens after the end
    token, then pad tokens up to ``min_length`` tokens in all. Replaces the encoder's own
    rule (Flux's T5 pads to 256; ``TokenizerPadding(0, 0)`` pads nothing)."""

    min_padding: int = 0
    min_length: int = 0


@runtime_checkable
class TokenizerOptions(Protocol):
    """A CLIP handle whose tokenizers take padding options (T5TokenizerOptions). ``encoder``
    is ComfyUI's name for one encoder (``"t5xxl"``); a handle without that encoder ignores
    the call. Called on a clone: the options belong to that handle only."""

    def set_tokenizer_padding(self, encoder: str, padding: TokenizerPadding) -> None: ...


@runtime_checkable
class VaeLike(Protocol):
    """An image autoencoder handle (the VAE socket). Images are IMAGE tensors.

    ``tile_size`` and ``overlap`` of the tiled methods are in pixels (image space) for both
    directions, as the ``VAEDecodeTiled`` / ``VAEEncodeTiled`` widgets give them; the VAE
    converts them to latent units itself.
    """

    def encode(self, image: torch.Tensor) -> torch.Tensor: ...

    def decode(self, samples: torch.Tensor) -> torch.Tensor: ...

    def encode_tiled(self, image: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor: ...

    def decode_tiled(self, samples: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor: ...


@runtime_checkable
class CheckpointPart(Protocol):
    """A MODEL, CLIP, VAE or CLIP_VISION whose weights can be saved (CheckpointSave,
    ModelSave, VAESave, ImageOnlyCheckpointSave).

    ``checkpoint_state()`` gives the weights with the handle's patches applied (LoRA,
    merges; merged where :func:`loom.memory.merging_at` says, which the save nodes set to the
    runtime's device and merge dtype), keyed as in the family's original single-file
    checkpoint; every key starts with ``checkpoint_prefix`` (``first_stage_model.``), which a
    file holding the part alone (VAESave) leaves out.
    """

    checkpoint_prefix: str

    def checkpoint_state(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class CheckpointModel(CheckpointPart, Protocol):
    """A MODEL that can be saved: ``checkpoint_metadata()`` is the file metadata ComfyUI
    writes for its architecture (``modelspec.*`` keys), besides the prompt and workflow."""

    def checkpoint_metadata(self) -> dict[str, str]: ...


@runtime_checkable
class SavableTextEncoders(Protocol):
    """A CLIP whose text encoders can be saved one file each (CLIPSave).

    ``text_encoder_files()`` maps each encoder's name (``clip_l``, ``clip_g``, ``t5xxl``;
    ``""`` for a CLIP holding one unnamed encoder) to its weights, patches applied, keyed as
    in that encoder's own file (``text_model.*``).
    """

    def text_encoder_files(self) -> dict[str, dict[str, torch.Tensor]]: ...
