"""ModelMergeFlux1 on two tiny Flux DiTs loaded by UNETLoader: each part's ratio by prefix."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from loom.nodes.builtin.loaders import UNETLoader
from loom.testing import make_context


def test_model_merge_flux1_ratios_by_block(runtime, base_dir):
    from loom_flux.merge_nodes import ModelMergeFlux1
    from loom_flux.tiny import dit_state, save, tiny_spec

    folder = base_dir / "models" / "diffusion_models"
    other = save(dit_state(tiny_spec().dit, seed=5), folder / "other-flux.safetensors")
    ctx = make_context(runtime)
    first = UNETLoader(unet_name="tiny-flux.safetensors", weight_dtype="default").run(ctx)
    second = UNETLoader(unet_name="other-flux.safetensors", weight_dtype="default").run(ctx)
    w1 = load_file(str(folder / "tiny-flux.safetensors"))
    w2 = load_file(str(other))
    names = list(ModelMergeFlux1.INPUT_TYPES()["required"])[2:]
    assert names[:5] == ["img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in."]
    assert len(names) == 5 + 19 + 38 + 1 and names[-1] == "final_layer."
    ratios = {name: 1.0 for name in names} | {
        "img_in.": 0.4,
        "guidance_in": 0.1,
        "double_blocks.0.": 0.7,
        "single_blocks.1.": 0.0,
        "final_layer.": 0.5,
    }
    (merged,) = ModelMergeFlux1().merge(first, second, **ratios)
    runtime.memory.load([merged])
    state = {k: v.detach().clone() for k, v in merged.module.state_dict().items()}
    runtime.memory.unload(merged)

    def ratio_of(key):
        matches = [n for n in ratios if key.startswith(n)]
        return ratios[max(matches, key=len)] if matches else ratios["img_in."]

    assert set(state) <= set(w1)
    assert {k.split(".")[0] for k in state} >= {"double_blocks", "single_blocks", "final_layer"}
    for key, value in state.items():
        r = ratio_of(key)
        expected = r * w1[key].float() + (1 - r) * w2[key].float()
        torch.testing.assert_close(value, expected.to(value.dtype), rtol=0, atol=1e-6, msg=key)
