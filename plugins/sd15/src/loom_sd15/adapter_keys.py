"""How weight-adapter files (LoRA, LyCORIS) name SD1.x weights: the ``adapter_key_map`` hook.

LoRA trainers name layers after *diffusers'* UNet (``down_blocks.0.attentions.0.proj_in``),
while this plugin's UNet keeps the LDM checkpoint layout (``input_blocks.1.1.proj_in``), so
:func:`unet_diffusers_names` rebuilds the diffusers name of every LDM weight from the
config (the mapping ComfyUI's ``unet_to_diffusers`` computes). From it and the module's own
keys come every layout a file may use:

- kohya sd-scripts: ``lora_unet_`` + the diffusers name with dots flattened (and the LDM
  name flattened, which some tools write); ``lora_te_`` / ``lora_te1_`` +
  ``text_model_encoder_layers_0_self_attn_q_proj`` for the text encoder;
- diffusers / PEFT: ``unet.down_blocks...attn1.to_q`` (and without ``unet.``), the older
  attention-processor names ``...attn1.processor.to_q`` / ``.processor.to_out``, and
  ``text_encoder.text_model.encoder.layers.0.self_attn.q_proj``;
- ComfyUI's own: ``diffusion_model.input_blocks.1.1.proj_in`` and
  ``text_encoders.clip_l.transformer.text_model...``; SimpleTuner's ``lycoris_`` + flattened.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from loom.types import AdapterKeyMap, AdapterTarget

RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
ATTENTION = ("norm", "proj_in", "proj_out")
TRANSFORMER = (
    "norm1",
    "norm2",
    "norm3",
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
)
BASIC = {
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
}


def _resnet(names: dict[str, str], ldm: str, diffusers: str) -> None:
    for ldm_part, diffusers_part in RESNET.items():
        names[f"{ldm}.{ldm_part}"] = f"{diffusers}.{diffusers_part}"


def _attention(names: dict[str, str], ldm: str, diffusers: str, depth: int) -> None:
    for part in ATTENTION:
        names[f"{ldm}.{part}"] = f"{diffusers}.{part}"
    for t in range(depth):
        for part in TRANSFORMER:
            names[f"{ldm}.transformer_blocks.{t}.{part}"] = (
                f"{diffusers}.transformer_blocks.{t}.{part}"
            )


#: SDXL's class embedding (ADM), for configs that have one.
LABEL_EMB = {"label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2"}


def _depths(config: Any) -> tuple[list[int], int]:
    """Transformer depth per level and in the middle block. A config with
    ``transformer_depths`` / ``middle_depth`` (SDXL's) gives them per level."""
    levels = len(config.channel_mult)
    if hasattr(config, "transformer_depths"):
        return list(config.transformer_depths), config.middle_depth
    depth = config.transformer_depth
    return [depth if level in config.attention_levels else 0 for level in range(levels)], depth


def unet_diffusers_names(config: Any) -> dict[str, str]:
    """LDM layer name -> diffusers layer name (no ``.weight``) for a UNet ``config``."""
    names: dict[str, str] = dict(BASIC)
    if getattr(config, "adm_in_channels", None):
        names.update(LABEL_EMB)
    levels, blocks = len(config.channel_mult), config.num_res_blocks
    depths, middle = _depths(config)
    for level in range(levels):
        n = 1 + (blocks + 1) * level
        for i in range(blocks):
            _resnet(names, f"input_blocks.{n}.0", f"down_blocks.{level}.resnets.{i}")
            if depths[level]:
                _attention(
                    names,
                    f"input_blocks.{n}.1",
                    f"down_blocks.{level}.attentions.{i}",
                    depths[level],
                )
            n += 1
        names[f"input_blocks.{n}.0.op"] = f"down_blocks.{level}.downsamplers.0.conv"
    _resnet(names, "middle_block.0", "mid_block.resnets.0")
    if middle:
        _attention(names, "middle_block.1", "mid_block.attentions.0", middle)
    _resnet(names, "middle_block.2" if middle else "middle_block.1", "mid_block.resnets.1")
    for up in range(levels):
        level = levels - 1 - up
        for i in range(blocks + 1):
            n = (blocks + 1) * up + i
            _resnet(names, f"output_blocks.{n}.0", f"up_blocks.{up}.resnets.{i}")
            index = 1
            if depths[level]:
                _attention(
                    names, f"output_blocks.{n}.1", f"up_blocks.{up}.attentions.{i}", depths[level]
                )
                index = 2
            if i == blocks:
                names[f"output_blocks.{n}.{index}.conv"] = f"up_blocks.{up}.upsamplers.0.conv"
    return names


def _flat(name: str) -> str:
    return name.replace(".", "_")


def _diffusers_forms(name: str) -> list[str]:
    """``name`` as diffusers writes it: plain, and the old attention-processor form."""
    forms = [name]
    if ".to_" in name:
        processor = name.replace(".to_", ".processor.to_")
        forms.append(processor[: -len(".0")] if processor.endswith(".to_out.0") else processor)
    return forms


@lru_cache(maxsize=16)
def _unet_keys(config: Any, module_keys: tuple[str, ...]) -> dict[str, str]:
    weights = [k for k in module_keys if k.endswith(".weight")]
    present = set(weights)
    keys: dict[str, str] = {}
    for key in weights:
        layer = key[: -len(".weight")]
        keys[f"diffusion_model.{layer}"] = key
        keys[f"lora_unet_{_flat(layer)}"] = key
    for ldm, diffusers in unet_diffusers_names(config).items():
        key = f"{ldm}.weight"
        if key not in present:
            continue
        keys[f"lora_unet_{_flat(diffusers)}"] = key
        keys[f"lycoris_{_flat(diffusers)}"] = key
        for form in _diffusers_forms(diffusers):
            keys[form] = key
            keys[f"unet.{form}"] = key
    return keys


@lru_cache(maxsize=16)
def _clip_keys(module_keys: tuple[str, ...]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for key in module_keys:
        if not key.endswith(".weight"):
            continue
        layer = key[: -len(".weight")]
        name = layer if layer.startswith("text_model.") else f"text_model.{layer}"
        for prefix in ("lora_te_", "lora_te1_"):
            keys[prefix + _flat(name)] = key
        keys[f"text_encoder.{name}"] = key
        keys[f"text_encoders.clip_l.transformer.{name}"] = key
    return keys


def _weight_keys(module: Any) -> tuple[str, ...]:
    return tuple(module.state_dict().keys())


def sd15_adapter_key_map(model: Any, kind: AdapterTarget) -> AdapterKeyMap | None:
    """The answer to ``adapter_key_map`` for SD1.x MODEL and CLIP values (None otherwise)."""
    from loom_sd15.clip import SD15Clip
    from loom_sd15.model import SD15Model

    if kind == "model" and isinstance(model, SD15Model):
        return AdapterKeyMap(model, _unet_keys(model.config, _weight_keys(model.module)))
    if kind == "clip" and isinstance(model, SD15Clip):
        return AdapterKeyMap(model.handle, _clip_keys(_weight_keys(model.handle.module)))
    return None


def layer_names(keys: Iterable[str]) -> list[str]:
    """Weight keys without ``.weight`` (for tests and tools listing what can be patched)."""
    return [k[: -len(".weight")] for k in keys if k.endswith(".weight")]
