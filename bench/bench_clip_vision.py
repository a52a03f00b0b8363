"""Benchmark loom-clip-vision at full size: SigLIP-384 (Flux Redux's encoder) and Redux.

Plain script; prints a markdown table::

    python bench/bench_clip_vision.py            # fp16 files (0.8 GB + 0.13 GB), ~5 min on 2 cores

A SigLIP so400m-patch14-384 tower (1152 wide, 27 layers, random weights) and a Redux model
(1152 -> 12288 -> 4096) are written in ComfyUI's layouts to a temporary folder, loaded
through the plugin's loaders (header detection, meta build, mmapped tensors) and run on one
512 x 768 image: preprocessing, the tower, Redux. The same weights in transformers'
``SiglipVisionModel`` (fp32, eager attention) give the reference for the tower's output.
Reported: load and run times (median of ``--repeat``; the tower next to transformers' own
forward on the same pixels), and the largest difference to transformers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _median(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from loom_clip_vision.config import SIGLIP_MEAN, SIGLIP_STD, VisionConfig
    from loom_clip_vision.model import build_tower, load_clip_vision
    from loom_clip_vision.preprocess import clip_preprocess
    from loom_clip_vision.style import ReduxConfig, ReduxEncoder, load_style_model
    from transformers import SiglipVisionModel

    from loom.memory import read_header, write_safetensors

    config = VisionConfig(
        kind="siglip",
        hidden_size=1152,
        intermediate_size=4304,
        num_layers=27,
        patch_size=14,
        image_size=384,
        projection_dim=None,
        hidden_act="gelu_pytorch_tanh",
        image_mean=SIGLIP_MEAN,
        image_std=SIGLIP_STD,
    )
    torch.manual_seed(0)
    tower = build_tower(config)
    flat = not hasattr(tower, "vision_model")
    state = {
        ("vision_model." + k if flat else k): v.half().contiguous()
        for k, v in tower.state_dict().items()
        if not k.endswith("position_ids")
    }
    redux = ReduxEncoder(ReduxConfig())
    folder = Path(tempfile.mkdtemp())
    tower_path = write_safetensors(folder / "sigclip_vision_patch14_384.safetensors", state)
    redux_path = write_safetensors(
        folder / "flux1-redux-dev.safetensors",
        {k: v.half().contiguous() for k, v in redux.state_dict().items()},
    )
    del tower, redux
    image = torch.rand(1, 512, 768, 3, generator=torch.Generator().manual_seed(1))

    load_s, vision = _median(lambda: load_clip_vision(read_header(tower_path)), args.repeat)
    vision.encode_image(image)  # first run loads the weights for compute
    encode_s, out = _median(lambda: vision.encode_image(image), args.repeat)
    style = load_style_model(read_header(redux_path))
    style.get_cond(out)
    redux_s, tokens = _median(lambda: style.get_cond(out), args.repeat)

    reference = SiglipVisionModel(
        config.to_transformers().__class__(**config.to_transformers().to_dict())
    )
    reference.config._attn_implementation = "eager"
    ref_state = {
        (k.removeprefix("vision_model.") if flat else k): v.float() for k, v in state.items()
    }
    reference.load_state_dict(ref_state, strict=False)
    pixels = clip_preprocess(image, 384, SIGLIP_MEAN, SIGLIP_STD)
    with torch.no_grad():
        ref_s, ref = _median(
            lambda: reference.eval()(pixel_values=pixels).last_hidden_state, args.repeat
        )
    diff = (ref - out.last_hidden_state).abs().max().item()

    print("| step | result |\n|---|---|")
    print(
        f"| load SigLIP-384 (fp16, {tower_path.stat().st_size / 2**20:.0f} MiB) | {load_s:.2f} s |"
    )
    print(f"| CLIPVisionEncode 512x768 -> 729 tokens | {encode_s:.2f} s |")
    print(f"| transformers SiglipVisionModel, same pixels (fp32 weights) | {ref_s:.2f} s |")
    print(f"| Redux -> {tuple(tokens.shape)} | {redux_s:.3f} s |")
    print(f"| max abs diff vs transformers (fp32) | {diff:.2e} |")


if __name__ == "__main__":
    main()
