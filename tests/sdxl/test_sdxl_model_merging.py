"""ModelMergeSDXL on tiny SDXL checkpoints loaded by the real loader: each block's ratio, and
a weight whose shapes differ (the inpaint UNet's 9-channel input conv) left as model1's."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from loom.nodes.builtin.loaders import CheckpointLoaderSimple
from loom.testing import make_context

UNET = "model.diffusion_model."


def loaded(runtime, handle):
    runtime.memory.load([handle])
    state = {k: v.detach().clone() for k, v in handle.module.state_dict().items()}
    runtime.memory.unload(handle)
    return state


def test_model_merge_sdxl_ratios_by_block_and_skips_mismatched_shapes(runtime, tiny_files):
    from loom_sdxl.merge_nodes import ModelMergeSDXL

    ctx = make_context(runtime)
    first = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(ctx).model
    second = CheckpointLoaderSimple(ckpt_name="sdxl-inpaint.safetensors").run(ctx).model
    w1, w2 = (
        {k[len(UNET) :]: v for k, v in load_file(str(tiny_files[n])).items() if k.startswith(UNET)}
        for n in ("base", "inpaint")
    )
    names = list(ModelMergeSDXL.INPUT_TYPES()["required"])[2:]
    assert names[:3] == ["time_embed.", "label_emb.", "input_blocks.0"]
    assert len(names) == 2 + 9 + 3 + 9 + 1 and names[-1] == "out."
    ratios = {name: 1.0 for name in names} | {
        "label_emb.": 0.3,
        "input_blocks.1": 0.6,
        "middle_block.1": 0.2,
        "output_blocks.0": 0.0,
    }
    (merged,) = ModelMergeSDXL().merge(first, second, **ratios)
    state = loaded(runtime, merged)

    def ratio_of(key):
        matches = [n for n in ratios if key.startswith(n)]
        return ratios[max(matches, key=len)] if matches else ratios["time_embed."]

    conv_in = "input_blocks.0.0.weight"
    assert w1[conv_in].shape != w2[conv_in].shape and torch.equal(state[conv_in], w1[conv_in])
    checked = 0
    for key in w1:
        if w1[key].shape != w2[key].shape:
            continue
        r = ratio_of(key)
        expected = r * w1[key].float() + (1 - r) * w2[key].float()
        torch.testing.assert_close(state[key], expected, rtol=0, atol=1e-6, msg=key)
        checked += r != 1.0
    assert checked > 0 and any(k.startswith("label_emb.") for k in w1)
