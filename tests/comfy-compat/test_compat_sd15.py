"""A pack calling ComfyUI's core nodes by their Python signatures (``CheckpointLoaderSimple``,
``CLIPTextEncode``, ``EmptyLatentImage``, ``nodes.common_ksampler``, ``VAEDecode``) on a tiny
random-weight SD1.5 checkpoint; the image equals the one Loom's own nodes make."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("loom_sd15")
pytest.importorskip("loom_samplers")


KSAMPLER_PACK = """
import nodes


class TxtToImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("STRING",), "seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    def run(self, ckpt_name, seed):
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt_name)
        (positive,) = nodes.CLIPTextEncode().encode(clip, "a red apple")
        (negative,) = nodes.CLIPTextEncode().encode(clip, "")
        (latent,) = nodes.EmptyLatentImage().generate(64, 64, 1)
        (samples,) = nodes.common_ksampler(
            model, seed, 3, 7.0, "euler", "normal", positive, negative, latent
        )
        return nodes.VAEDecode().decode(vae, samples)


NODE_CLASS_MAPPINGS = {"PackTxtToImage": TxtToImage}
"""


@pytest.fixture
def sd15_base(base, tmp_path_factory):
    from loom_sd15.tiny import write_tiny_checkpoint

    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_tiny_checkpoint(checkpoints / "tiny.safetensors", seed=0)
    return base


def test_common_ksampler_on_tiny_sd15_matches_loom_nodes(sd15_base, write_pack):
    from loom.runtime import Runtime
    from loom.settings import Settings

    write_pack("ksampler_pack", {"__init__.py": KSAMPLER_PACK})
    settings = Settings(  # the CLIP-L tokenizer comes from loom-sd15's package data
        base_directory=sd15_base
    )
    runtime = Runtime(settings)
    through_pack = runtime.executor.run_prompt(
        {
            "1": {
                "class_type": "PackTxtToImage",
                "inputs": {"ckpt_name": "tiny.safetensors", "seed": 5},
            },
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
    )
    assert through_pack.error is None, through_pack.error
    native = runtime.executor.run_prompt(
        {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red apple"}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "5": {
                "class_type": "KSampler",
                "inputs": {
                    "model": ["1", 0], "seed": 5, "steps": 3, "cfg": 7.0,
                    "sampler_name": "euler", "scheduler": "normal",
                    "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
                    "denoise": 1.0,
                },
            },
            "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
            "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
        }
    )  # fmt: skip
    assert native.error is None, native.error
    image = through_pack.values["1"][0][0]
    assert image.shape == (1, 64, 64, 3) and image.std() > 0.01
    assert torch.equal(image, native.values["6"][0][0])
