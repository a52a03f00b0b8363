"""``LoraSave`` ("Extract and Save Lora", ComfyUI's ``comfy_extras/nodes_lora_extract.py``):
a LoRA file from the weight differences a ``ModelMergeSubtract`` / ``CLIPMergeSubtract``
output computes with.

Each 2-D (or convolution) ``.weight`` difference becomes ``lora_up`` / ``lora_down``: the
rank-``r`` truncated SVD (``up = U_r · diag(S_r)``, ``down = Vh_r``; a 3x3 kernel flattened
to ``[out, in·9]``, a 1x1 one squeezed), both clamped to ``±`` the 0.99 quantile of their
joint values, as ComfyUI does; ``full_diff`` writes the whole difference as ``.diff``.
With ``bias_diff`` the 1-D weights (norms) become ``.diff`` and biases ``.diff_b``. Keys are
ComfyUI's own LoRA layout, read back by LoraLoader: ``diffusion_model.<layer>`` for the
MODEL (its :class:`loom.types.CheckpointModel` keys without the checkpoint prefix) and
``text_encoders.<encoder>.transformer.<layer>`` for the CLIP
(:class:`loom.types.SavableTextEncoders`). A scaled-fp8 layer's difference is its stored
values times its ``weight_scale`` (what it computes with), not the raw fp8 values. Tensors
are stored in fp16.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import loom
from loom.types import CheckpointModel, Clip, Model, SavableTextEncoders

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CLAMP_QUANTILE = 0.99
LORA_TYPES = ("standard", "full_diff")
MODEL_PREFIX = "diffusion_model."
TEXT_ENCODERS_PREFIX = "text_encoders."


def extract_lora(diff: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(up, down)`` with ``up @ down`` the clamped rank-``rank`` SVD approximation of
    ``diff`` (``[out, in]`` or a ``[out, in, kh, kw]`` convolution kernel), float32."""
    import torch

    out_dim, in_dim = diff.shape[:2]
    rank = min(rank, in_dim, out_dim)
    kernel = tuple(diff.shape[2:4]) if diff.ndim == 4 else None
    matrix = diff.float()
    if kernel is not None:
        matrix = (
            matrix.flatten(start_dim=1) if kernel != (1, 1) else matrix.reshape(out_dim, in_dim)
        )
    # the thin SVD: the same leading factors as ComfyUI's full one, without an [out, out]
    # U (a 49408-row token embedding would need ~10 GB for it)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    up = u[:, :rank] @ torch.diag(s[:rank])
    down = vh[:rank, :]
    high = torch.quantile(torch.cat([up.flatten(), down.flatten()]), CLAMP_QUANTILE)
    up, down = up.clamp(-high, high), down.clamp(-high, high)
    if kernel is not None:
        up = up.reshape(out_dim, rank, 1, 1)
        down = down.reshape(rank, in_dim, *kernel)
    return up, down


def lora_tensors(
    diffs: dict[str, torch.Tensor], prefix: str, rank: int, lora_type: str, bias_diff: bool
) -> dict[str, torch.Tensor]:
    """The LoRA file entries of the weight differences ``diffs`` (keyed as ComfyUI's state
    dict; a scaled-fp8 layer's weight dequantised by its ``weight_scale`` first), their layer
    names under ``prefix``."""
    from loom.memory import SCALE_TENSORS, dequantized_weights

    out: dict[str, Any] = {}
    for key, diff in dequantized_weights(diffs).items():
        if not diff.is_floating_point() or diff.numel() == 0:
            continue  # position ids, a quantisation config: no weights
        if key.rpartition(".")[2] in SCALE_TENSORS:
            continue
        if key.endswith(".weight"):
            layer = prefix + key[: -len(".weight")]
            if lora_type == "full_diff":
                out[f"{layer}.diff"] = diff
            elif diff.ndim < 2:
                if bias_diff:
                    out[f"{layer}.diff"] = diff
            else:
                try:
                    up, down = extract_lora(diff, rank)
                except RuntimeError as exc:  # torch.quantile's size limit, a failed SVD
                    # ComfyUI leaves such a layer out with a warning; so does Loom
                    log.warning("LoraSave: no LoRA weights for %s: %s", key, exc)
                    continue
                out[f"{layer}.lora_up.weight"] = up
                out[f"{layer}.lora_down.weight"] = down
        elif bias_diff and key.endswith(".bias"):
            out[f"{prefix}{key[: -len('.bias')]}.diff_b"] = diff
    return {key: tensor.contiguous().half().cpu() for key, tensor in out.items()}


def _model_diffs(model: Any) -> dict[str, torch.Tensor]:
    if not isinstance(model, CheckpointModel):
        raise loom.LoomError(
            f"LoraSave: input 'model_diff' ({type(model).__name__}) cannot give its weights in "
            "a checkpoint layout; extracting a LoRA from it is not supported",
            hint="give it the MODEL output of ModelMergeSubtract on a supported family",
        )
    start = len(model.checkpoint_prefix)
    return {key[start:]: value for key, value in model.checkpoint_state().items()}


def _text_encoder_diffs(clip: Any) -> dict[str, torch.Tensor]:
    if not isinstance(clip, SavableTextEncoders):
        raise loom.LoomError(
            f"LoraSave: input 'text_encoder_diff' ({type(clip).__name__}) cannot give its text "
            "encoders' weights; extracting a LoRA from it is not supported",
            hint="give it the CLIP output of CLIPMergeSubtract on a supported family",
        )
    return {
        f"{name}.transformer.{key}" if name else f"transformer.{key}": value
        for name, tensors in clip.text_encoder_files().items()
        for key, value in tensors.items()
    }


@loom.node("LoraSave", category="_for_testing", output_node=True, experimental=True, v3=True)
class LoraSave:
    """A LoRA extracted from a model (and text encoder) difference, saved to the output folder."""

    filename_prefix: str = loom.ui.string("loras/ComfyUI_extracted_lora")
    rank: int = loom.ui.int(8, min=1, max=4096, step=1)
    lora_type: str = loom.ui.combo(list(LORA_TYPES))
    bias_diff: bool = loom.ui.boolean(True)
    model_diff: Model = loom.ui.input(
        optional=True, tooltip="The ModelSubtract output to be converted to a lora."
    )
    text_encoder_diff: Clip = loom.ui.input(
        optional=True, tooltip="The CLIPSubtract output to be converted to a lora."
    )

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        from loom.frontend import get_save_path
        from loom.memory import write_safetensors

        if self.model_diff is None and self.text_encoder_diff is None:
            return loom.NodeOutput()
        runtime = ctx.require_runtime("the output folder")
        target = get_save_path(self.filename_prefix, runtime.settings.output_dir)
        tensors: dict[str, Any] = {}
        options = (self.rank, self.lora_type, self.bias_diff)
        # the differences merged as loading would merge them on the runtime's device (ComfyUI
        # loads the model there, patches forced, before reading them)
        if self.model_diff is not None:
            with runtime.memory.merging_for_save():
                diffs = _model_diffs(self.model_diff)
            tensors |= lora_tensors(diffs, MODEL_PREFIX, *options)
        if self.text_encoder_diff is not None:
            with runtime.memory.merging_for_save():
                diffs = _text_encoder_diffs(self.text_encoder_diff)
            tensors |= lora_tensors(diffs, TEXT_ENCODERS_PREFIX, *options)
        write_safetensors(target.folder / target.file_name(target.counter, "safetensors"), tensors)
        return loom.NodeOutput()
