"""Model and CLIP merging nodes on two tiny SD1.5 checkpoints loaded by the real loader:
the merged clone's weights, once loaded, equal the hand computation from the files, and
the inputs are unchanged."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from loom.errors import LoomError
from loom.memory import DiffPatch
from loom.nodes.builtin.loaders import CheckpointLoaderSimple
from loom.nodes.builtin.model_merging import (
    CLIPMergeAdd,
    CLIPMergeSimple,
    CLIPMergeSubtract,
    ModelMergeAdd,
    ModelMergeBlocks,
    ModelMergeSimple,
    ModelMergeSubtract,
)
from loom.testing import make_context

UNET = "model.diffusion_model."


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory):
    from loom_sd15.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("other") / "other.safetensors", seed=1)


@pytest.fixture
def parts(base_dir, other_checkpoint, runtime, tiny_checkpoint):
    (base_dir / "models" / "checkpoints" / "other.safetensors").symlink_to(other_checkpoint)
    ctx = make_context(runtime)
    first = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx)
    second = CheckpointLoaderSimple(ckpt_name="other.safetensors").run(ctx)
    files = (load_file(str(tiny_checkpoint)), load_file(str(other_checkpoint)))
    return ctx, first, second, files


def unet_files(files):
    return [{k[len(UNET) :]: v for k, v in f.items() if k.startswith(UNET)} for f in files]


def loaded(runtime, handle) -> dict[str, torch.Tensor]:
    """The handle's weights as its load computes them (patches applied), copied."""
    runtime.memory.load([handle])
    state = {k: v.detach().clone() for k, v in handle.module.state_dict().items()}
    runtime.memory.unload(handle)
    return state


def assert_merged(state, w1, w2, ratio_of, keys=None):
    keys = keys or list(w1)
    for key in keys:
        a, b = ratio_of(key)
        expected = a * w1[key].float() + b * w2[key].float()
        torch.testing.assert_close(state[key], expected, rtol=0, atol=1e-6, msg=key)


def test_model_merge_simple_mixes_every_unet_weight_and_leaves_the_inputs_alone(parts, runtime):
    ctx, first, second, files = parts
    w1, w2 = unet_files(files)
    merged = ModelMergeSimple(model1=first.model, model2=second.model, ratio=0.3).run(ctx)
    assert merged is not first.model and merged.is_clone(first.model)
    assert set(merged.weight_patches) == set(w1)
    assert_merged(loaded(runtime, merged), w1, w2, lambda _k: (0.3, 0.7))
    assert first.model.weight_patches == {} and second.model.weight_patches == {}
    for handle, weights in ((first.model, w1), (second.model, w2)):
        state = loaded(runtime, handle)
        assert all(torch.equal(state[k], weights[k]) for k in weights)


@pytest.mark.parametrize(
    ("node", "scales"),
    [
        (lambda m1, m2: ModelMergeSubtract(model1=m1, model2=m2, multiplier=-2.5), (-2.5, 2.5)),
        (lambda m1, m2: ModelMergeAdd(model1=m1, model2=m2), (1.0, 1.0)),
        (lambda m1, m2: ModelMergeSimple(model1=m1, model2=m2, ratio=1.0), (1.0, 0.0)),
        (lambda m1, m2: ModelMergeSimple(model1=m1, model2=m2, ratio=0.0), (0.0, 1.0)),
    ],
)
def test_subtract_add_and_the_ratio_ends(parts, runtime, node, scales):
    ctx, first, second, files = parts
    w1, w2 = unet_files(files)
    merged = node(first.model, second.model).run(ctx)
    assert_merged(loaded(runtime, merged), w1, w2, lambda _k: scales)


def block_ratio_of(ratios):
    """The expected ratio by hand: the longest matching name, else the first ratio."""

    def ratio_of(key):
        names = [n for n in ratios if key.startswith(n)]
        ratio = ratios[max(names, key=len)] if names else next(iter(ratios.values()))
        return ratio, 1.0 - ratio

    return ratio_of


def test_model_merge_blocks_gives_each_part_its_ratio(parts, runtime):
    ctx, first, second, files = parts
    w1, w2 = unet_files(files)
    node = ModelMergeBlocks(model1=first.model, model2=second.model, input=0.2, middle=0.5, out=0.9)
    state = loaded(runtime, node.run(ctx))
    ratio_of = block_ratio_of({"input": 0.2, "middle": 0.5, "out": 0.9})
    assert ratio_of("time_embed.0.weight") == (0.2, 0.8)  # no part: the input ratio
    assert ratio_of("output_blocks.0.0.in_layers.0.weight")[0] == 0.9
    assert_merged(state, w1, w2, ratio_of)
    assert {k.split(".")[0] for k in w1} >= {"time_embed", "input_blocks", "middle_block", "out"}


def test_model_merge_sd1_ratios_by_block(parts, runtime):
    from loom_sd15.merge_nodes import ModelMergeSD1

    _ctx, first, second, files = parts
    w1, w2 = unet_files(files)
    names = list(ModelMergeSD1.INPUT_TYPES()["required"])
    assert names[:4] == ["model1", "model2", "time_embed.", "label_emb."]
    assert names[-1] == "out." and len(names) == 2 + 2 + 12 + 3 + 12 + 1
    ratios = {name: 1.0 for name in names[2:]}
    ratios |= {"time_embed.": 0.1, "input_blocks.1.": 0.25, "middle_block.1.": 0.5}
    ratios |= {"output_blocks.2.": 0.75, "out.": 0.0}
    (merged,) = ModelMergeSD1().merge(first.model, second.model, **ratios)
    state = loaded(runtime, merged)
    assert_merged(state, w1, w2, block_ratio_of(ratios))
    changed = {
        k.split(".")[0] + "." + k.split(".")[1] for k in w1 if not torch.equal(state[k], w1[k])
    }
    assert {"input_blocks.1", "middle_block.1", "output_blocks.2", "out.0"} <= changed
    assert "input_blocks.0" not in changed


def test_a_merged_model_carries_the_second_models_own_patches(parts, runtime):
    ctx, first, second, files = parts
    w1, w2 = unet_files(files)
    key = "out.2.weight"
    diff = torch.randn(w2[key].shape, generator=torch.Generator().manual_seed(3))
    patched = second.model.clone()
    patched.add_patches({key: DiffPatch(diff)}, 0.5)
    merged = ModelMergeSimple(model1=first.model, model2=patched, ratio=0.4).run(ctx)
    expected = 0.4 * w1[key] + 0.6 * (w2[key] + 0.5 * diff)
    torch.testing.assert_close(loaded(runtime, merged)[key], expected, rtol=0, atol=1e-6)


def test_merging_with_a_loaded_patched_clone_of_the_same_model_reads_stored_weights(parts, runtime):
    # Both handles share one module; while `patched` is loaded the module holds its patched
    # weights, and the merge must still start from the stored ones.
    ctx, first, _second, files = parts
    w1 = unet_files(files)[0]
    key = "input_blocks.0.0.weight"
    diff = torch.ones(w1[key].shape)
    patched = first.model.clone()
    patched.add_patches({key: DiffPatch(diff)}, 1.0)
    runtime.memory.load([patched])
    merged = ModelMergeSimple(model1=first.model, model2=patched, ratio=0.5).run(ctx)
    state = loaded(runtime, merged)
    torch.testing.assert_close(state[key], w1[key] + 0.5 * diff, rtol=0, atol=1e-6)
    assert torch.equal(state["out.2.weight"], w1["out.2.weight"])


@pytest.mark.parametrize(
    ("node", "scales"),
    [
        (lambda c1, c2: CLIPMergeSimple(clip1=c1, clip2=c2, ratio=0.25), (0.25, 0.75)),
        (lambda c1, c2: CLIPMergeSubtract(clip1=c1, clip2=c2, multiplier=2.0), (2.0, -2.0)),
        (lambda c1, c2: CLIPMergeAdd(clip1=c1, clip2=c2), (1.0, 1.0)),
    ],
)
def test_clip_merges_mix_text_encoder_weights_but_not_position_ids(parts, runtime, node, scales):
    ctx, first, second, _files = parts
    w1, w2 = loaded(runtime, first.clip.handle), loaded(runtime, second.clip.handle)
    merged = node(first.clip, second.clip).run(ctx)
    assert merged is not first.clip and merged.handle.is_clone(first.clip.handle)
    assert first.clip.handle.weight_patches == {}
    state = loaded(runtime, merged.handle)
    fixed = [k for k in w1 if k.endswith((".position_ids", ".logit_scale"))]
    mixed = [k for k in w1 if k not in fixed]
    assert mixed and all(torch.equal(state[k], w1[k]) for k in fixed)
    assert_merged(state, w1, w2, lambda _k: scales, keys=mixed)
    # the merged CLIP still encodes
    assert merged.encode("a cat")[0][0].shape == first.clip.encode("a cat")[0][0].shape


def test_merging_something_that_is_not_a_model_names_the_node_and_input(parts):
    ctx, first, _second, _files = parts
    with pytest.raises(LoomError, match="ModelMergeAdd: input model2 is a str"):
        ModelMergeAdd(model1=first.model, model2="oops").run(ctx)
    with pytest.raises(LoomError, match="CLIPMergeSimple: input clip2"):
        CLIPMergeSimple(clip1=first.clip, clip2=object(), ratio=0.5).run(ctx)
