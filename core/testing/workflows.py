"""ComfyUI's default txt2img graph as an API-format prompt, for plugins' workflow tests.

:func:`txt2img_prompt` builds the graph ComfyUI's default workflow has (a checkpoint
loader, an empty latent, a positive and a negative text encoding, ``KSampler``,
``VAEDecode`` and an image output) under ComfyUI's default node ids, with every widget a
test varies as a keyword. Families whose templates load the parts separately (Flux's
``UNETLoader`` / ``DualCLIPLoader`` / ``VAELoader``) pass those nodes as ``loaders``, the
links the graph takes its MODEL / CLIP / VAE from, and the ids their templates use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

#: A link to another node's output: ``[node_id, output_index]``.
Link = list[Any]


@attrs.frozen
class Txt2ImgIds:
    """The node id of each part of the graph (ComfyUI's default workflow's by default)."""

    loader: str = "4"
    latent: str = "5"
    positive: str = "6"
    negative: str = "7"
    sampler: str = "3"
    decode: str = "8"
    output: str = "9"


DEFAULT_IDS = Txt2ImgIds()


def txt2img_prompt(
    ckpt_name: str | None = "model.safetensors",
    *,
    positive: str | Mapping[str, Any] = "a (glass:1.2) bottle",
    negative: str | Mapping[str, Any] = "text, watermark",
    width: int = 64,
    height: int = 64,
    batch: int = 1,
    latent_class: str = "EmptyLatentImage",
    seed: int = 42,
    steps: int = 3,
    cfg: float = 8.0,
    sampler_name: str = "euler",
    scheduler: str = "normal",
    denoise: float = 1.0,
    output: str = "SaveImage",
    filename_prefix: str = "t",
    loaders: Mapping[str, Mapping[str, Any]] | None = None,
    model: Link | None = None,
    clip: Link | None = None,
    vae: Link | None = None,
    ids: Txt2ImgIds = DEFAULT_IDS,
) -> dict[str, Any]:
    """ComfyUI's default txt2img graph as a fresh prompt dict.

    :param ckpt_name: the ``CheckpointLoaderSimple`` file; None for no checkpoint loader
        (then give ``loaders`` and the ``model`` / ``clip`` / ``vae`` links).
    :param positive: the positive prompt's text (a ``CLIPTextEncode``), or a whole node
        (``{"class_type": "CLIPTextEncodeSDXL", "inputs": {...}}``); ``negative`` likewise.
    :param output: ``SaveImage`` (with ``filename_prefix``) or ``PreviewImage``.
    :param loaders: nodes by id put first (separate model / text encoder / VAE loaders).
    :param model: where ``KSampler`` takes its MODEL (the checkpoint's by default);
        ``clip`` and ``vae`` likewise for the text encodings and the decode.
    """
    model = model or [ids.loader, 0]
    clip = clip or [ids.loader, 1]
    vae = vae or [ids.loader, 2]
    prompt: dict[str, Any] = {key: _copy(node) for key, node in (loaders or {}).items()}
    if ckpt_name is not None:
        prompt[ids.loader] = {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": ckpt_name},
        }
    prompt[ids.latent] = {
        "class_type": latent_class,
        "inputs": {"width": width, "height": height, "batch_size": batch},
    }
    prompt[ids.positive] = _encode(positive, clip)
    prompt[ids.negative] = _encode(negative, clip)
    prompt[ids.sampler] = {
        "class_type": "KSampler",
        "inputs": {
            "seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler_name": sampler_name,
            "scheduler": scheduler,
            "denoise": denoise,
            "model": list(model),
            "positive": [ids.positive, 0],
            "negative": [ids.negative, 0],
            "latent_image": [ids.latent, 0],
        },
    }
    prompt[ids.decode] = {
        "class_type": "VAEDecode",
        "inputs": {"samples": [ids.sampler, 0], "vae": list(vae)},
    }
    images = [ids.decode, 0]
    if output == "SaveImage":
        prompt[ids.output] = {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": filename_prefix, "images": images},
        }
    else:
        prompt[ids.output] = {"class_type": output, "inputs": {"images": images}}
    return prompt


def _encode(text_or_node: str | Mapping[str, Any], clip: Link) -> dict[str, Any]:
    if isinstance(text_or_node, str):
        return {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": text_or_node, "clip": list(clip)},
        }
    return _copy(text_or_node)


def _copy(node: Mapping[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(dict(node))
