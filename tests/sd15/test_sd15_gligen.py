"""GLIGEN text boxes: the file's real layout, the box conditioning, parity of the UNet with
GLIGEN's gated layers against diffusers at identical weights, a txt2img workflow through the
executor, and the errors bad input gets."""

from __future__ import annotations

import copy

import pytest
import torch
from loom_sd15.convert import unet_conversion
from loom_sd15.gligen import MAX_OBJECTS, FuserPatch, GligenBox, GligenBoxes, load_gligen
from loom_sd15.tiny import gligen_state, tiny_spec
from loom_sd15.unet import UNetConfig, UNetModel
from sd15_markers import needs_samplers

from loom.memory import write_safetensors
from loom.testing import txt2img_prompt

TOL = 1e-4
SIZE = 64
#: Less than the tiny UNet (3.9 MB) beside its activations: models are evicted and streamed.
BUDGET = 5 * 2**20


def _write_gligen(path, unet: UNetConfig, text_dim: int, seed: int = 0, prefix: str = ""):
    state = gligen_state(unet, text_dim, seed=seed)
    state = {(k if k.startswith("position_net.") else prefix + k): v for k, v in state.items()}
    write_safetensors(path, state)
    return state


# --- the file ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."], ids=["pruned", "prefixed"])
def test_loader_reads_the_real_layout_in_unet_order(tmp_path, prefix):
    unet = tiny_spec().unet
    state = _write_gligen(tmp_path / "g.safetensors", unet, text_dim=32, prefix=prefix)
    gligen = load_gligen(tmp_path / "g.safetensors")
    assert gligen.file == "g.safetensors" and gligen.text_dim == 32
    # tiny UNet: transformers at input_blocks.3, middle_block, output_blocks.0 and .1
    blocks = ["input_blocks.3.1", "middle_block.1", "output_blocks.0.1", "output_blocks.1.1"]
    assert gligen.fuser_count == len(blocks)
    for fuser, block in zip(gligen.net.fusers, blocks, strict=True):
        key = f"{prefix}{block}.transformer_blocks.0.fuser."
        assert torch.equal(fuser.attn.to_q.weight, state[key + "attn.to_q.weight"])
        assert torch.equal(fuser.alpha_attn, state[key + "alpha_attn"])
        # not 768 wide: ComfyUI's 64-channel heads
        assert fuser.attn.heads == 1
    position = gligen.net.position_net
    assert torch.equal(position.linears[4].weight, state["position_net.linears.4.weight"])
    assert torch.equal(position.null_positive_feature, state["position_net.null_positive_feature"])


def test_sd1_width_tokens_get_eight_heads(tmp_path):
    unet = UNetConfig(
        model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
        context_dim=768,
    )  # fmt: skip
    _write_gligen(tmp_path / "g.safetensors", unet, text_dim=768)
    gligen = load_gligen(tmp_path / "g.safetensors")
    assert {f.attn.heads for f in gligen.net.fusers} == {8}


def test_fp16_file_runs_in_the_unets_compute_dtype(tmp_path):
    """Weights stay fp16 as stored; the object tokens are float32, the fusers follow x."""
    unet = tiny_spec().unet
    state = {k: v.half() for k, v in gligen_state(unet, 32).items()}
    write_safetensors(tmp_path / "g16.safetensors", state)
    gligen = load_gligen(tmp_path / "g16.safetensors")
    assert gligen.net.fusers[0].linear.weight.dtype == torch.float16
    boxes = GligenBoxes(gligen, (GligenBox(torch.randn(1, 32), 2, 3, 1, 0),))
    objects = boxes.objects(2, 8, 8)
    assert objects.shape == (2, MAX_OBJECTS, 32) and objects.dtype == torch.float32
    model = UNetModel(unet).eval()
    x = torch.randn(2, 4, 8, 8, dtype=torch.bfloat16)
    with torch.inference_mode():
        out = model(
            x,
            torch.tensor([10.0, 10.0]),
            torch.randn(2, 77, 32, dtype=torch.bfloat16),
            self_attention_patch=FuserPatch(gligen, objects),
        )
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# --- parity with diffusers -----------------------------------------------------------------


def _boxes_by_hand(placed, batch, h, w, text_dim):
    """GLIGEN's inputs as ComfyUI builds them: fractions of the latent, 30 slots, a mask."""
    boxes = torch.zeros(batch, MAX_OBJECTS, 4)
    texts = torch.zeros(batch, MAX_OBJECTS, text_dim)
    masks = torch.zeros(batch, MAX_OBJECTS)
    for i, box in enumerate(placed):
        boxes[:, i] = torch.tensor(
            [box.x / w, box.y / h, (box.x + box.width) / w, (box.y + box.height) / h]
        )
        texts[:, i] = box.text[0]
        masks[:, i] = 1.0
    return boxes, texts, masks


@pytest.mark.parametrize("context", [768, 40], ids=["sd1-768-8-heads", "other-64-ch-heads"])
def test_unet_with_gligen_matches_diffusers_gated_attention(tmp_path, context):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    sd1 = context == 768
    channels = 32 if sd1 else 64  # 64-channel heads need widths of 64 and 128
    config = UNetConfig(
        model_channels=channels,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(0, 1),
        num_heads=8,
        head_channels=None if sd1 else 64,
        context_dim=context,
    )
    ours = UNetModel(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in ours.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    ours.eval()
    state = _write_gligen(tmp_path / "g.safetensors", config, text_dim=context, seed=1)
    gligen = load_gligen(tmp_path / "g.safetensors")

    reference = diffusers.UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(channels, channels * 2),
        layers_per_block=1,
        cross_attention_dim=context,
        attention_head_dim=8 if sd1 else (1, 2),
        norm_num_groups=32,
        attention_type="gated",
    ).eval()
    checkpoint = unet_conversion().to_checkpoint(ours.state_dict())
    converted = convert_ldm_unet_checkpoint(checkpoint, reference.config)
    # the fusers sit in the block whose attn1 holds the same weights as ours
    for key, value in state.items():
        if key.startswith("position_net."):
            converted[key] = value
            continue
        block, suffix = key.split(".fuser.")
        q = checkpoint[f"model.diffusion_model.{block}.attn1.to_q.weight"]
        [theirs] = [
            k[: -len(".attn1.to_q.weight")]
            for k, v in converted.items()
            if k.endswith(".attn1.to_q.weight") and torch.equal(v, q)
        ]
        converted[f"{theirs}.fuser.{suffix}"] = value
    reference.load_state_dict(converted, strict=True)

    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 16, 12, generator=generator)
    t = torch.tensor([999.0, 17.0])
    text = torch.randn(2, 77, context, generator=generator)
    placed = (
        GligenBox(torch.randn(1, context, generator=generator), 4, 6, 2, 3),
        GligenBox(torch.randn(1, context, generator=generator), 8, 8, 8, 0),
    )
    boxes = GligenBoxes(gligen, placed)
    with torch.no_grad():
        objects = boxes.objects(2, 16, 12)
        plain = ours(x, t, text)
        a = ours(x, t, text, self_attention_patch=FuserPatch(gligen, objects))
        hand = _boxes_by_hand(placed, 2, 16, 12, context)
        gligen_args = dict(zip(("boxes", "positive_embeddings", "masks"), hand, strict=True))
        b = reference(x, t, text, cross_attention_kwargs={"gligen": gligen_args}).sample
        ref_objects = reference.position_net(**gligen_args)
    assert (objects - ref_objects).abs().max().item() < TOL
    diff = (a - b).abs().max().item()
    print(f"unet+gligen max abs diff {diff:.3g}")
    assert diff < TOL
    assert (a - plain).abs().max().item() > 1e-3  # the gated layers do something


# --- nodes and workflows -------------------------------------------------------------------


@pytest.fixture
def gligen_file(base_dir):
    folder = base_dir / "models" / "gligen"
    folder.mkdir(parents=True)
    _write_gligen(folder / "tiny-gligen.safetensors", tiny_spec().unet, text_dim=32, seed=5)
    return folder / "tiny-gligen.safetensors"


def txt2img(boxes: list[dict] | None = None, seed: int = 42) -> dict:
    prompt = txt2img_prompt(
        "tiny.safetensors",
        positive="a cat",
        negative="blurry",
        width=SIZE,
        height=SIZE,
        seed=seed,
        steps=2,
        cfg=7.0,
        output="PreviewImage",
    )
    positive = ["6", 0]
    if boxes:
        prompt["20"] = {
            "class_type": "GLIGENLoader",
            "inputs": {"gligen_name": "tiny-gligen.safetensors"},
        }
        for i, box in enumerate(boxes):
            node = str(21 + i)
            prompt[node] = {
                "class_type": "GLIGENTextBoxApply",
                "inputs": {
                    "conditioning_to": positive,
                    "clip": ["4", 1],
                    "gligen_textbox_model": ["20", 0],
                    **box,
                },
            }
            positive = [node, 0]
        prompt["3"]["inputs"]["positive"] = positive
    return prompt


def execute(runtime, prompt: dict):
    from loom.errors import PromptValidationError
    from loom.executor.executor import Executor

    executor = Executor(runtime)
    try:
        validated = executor.validate(copy.deepcopy(prompt))
    except PromptValidationError as error:
        raise AssertionError(error.node_errors) from error
    return executor.execute("test", validated.prompt, validated.outputs, {})


def image(runtime, prompt: dict) -> torch.Tensor:
    result = execute(runtime, prompt)
    assert result.error is None, result.error.get("exception_message")
    return result.values["8"][0][0]


CAT = {"text": "cat", "width": 32, "height": 24, "x": 8, "y": 16}
HAT = {"text": "hat", "width": 16, "height": 16, "x": 40, "y": 0}


@needs_samplers
def test_txt2img_with_text_boxes_is_deterministic_and_differs(runtime, gligen_file):
    plain = image(runtime, txt2img())
    boxed = image(runtime, txt2img([CAT, HAT]))
    assert boxed.shape == plain.shape == (1, SIZE, SIZE, 3)
    assert torch.equal(boxed, image(runtime, txt2img([CAT, HAT])))
    assert not torch.equal(boxed, plain)
    moved = image(runtime, txt2img([CAT | {"x": 0}, HAT]))
    assert not torch.equal(boxed, moved)


def test_text_box_apply_appends_boxes_in_latent_units(runtime, gligen_file):
    from loom_sd15.gligen_nodes import GLIGENLoader, GLIGENTextBoxApply

    from loom.nodes.builtin.loaders import CheckpointLoaderSimple
    from loom.testing import make_context

    ctx = make_context(runtime)
    gligen = GLIGENLoader(gligen_name="tiny-gligen.safetensors").run(ctx)
    clip = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx).clip
    base = clip.encode("a cat")

    def apply(conditioning, box):
        node = GLIGENTextBoxApply(
            conditioning_to=conditioning, clip=clip, gligen_textbox_model=gligen, **box
        )
        return node.run(ctx)

    second = apply(apply(base, CAT), HAT)
    assert "gligen" not in base[0][1]  # the input conditioning is not changed
    assert torch.equal(second[0][0], base[0][0])
    boxes = second[0][1]["gligen"]
    assert boxes.gligen is gligen
    # (height, width, y, x) in latent pixels: the node's pixels // 8
    assert [(b.height, b.width, b.y, b.x) for b in boxes.boxes] == [(3, 4, 2, 1), (2, 2, 0, 5)]
    _, pooled = clip.encode_from_tokens(clip.tokenize("hat"))
    assert torch.equal(boxes.boxes[1].text, pooled)


def test_object_info_is_comfyuis(runtime, gligen_file):
    from loom.nodes.object_info import object_info

    info = object_info(runtime.registry, runtime.environment)
    loader, apply = info["GLIGENLoader"], info["GLIGENTextBoxApply"]
    assert loader["input"]["required"] == {"gligen_name": [["tiny-gligen.safetensors"]]}
    assert (loader["output"], loader["category"]) == (["GLIGEN"], "loaders")
    size = {"min": 8, "max": 16384, "step": 8}
    assert apply["input"]["required"] == {
        "conditioning_to": ["CONDITIONING"],
        "clip": ["CLIP"],
        "gligen_textbox_model": ["GLIGEN"],
        "text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
        "width": ["INT", {"default": 64, **size}],
        "height": ["INT", {"default": 64, **size}],
        "x": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}],
        "y": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}],
    }
    assert apply["input_order"]["required"] == list(apply["input"]["required"])
    assert (apply["output"], apply["category"]) == (["CONDITIONING"], "conditioning/gligen")


# --- bad input -----------------------------------------------------------------------------


def _error(runtime, prompt) -> str:
    result = execute(runtime, prompt)
    assert result.error is not None
    print(result.error["exception_message"])
    return result.error["exception_message"]


@needs_samplers
def test_a_file_that_is_not_gligen(runtime, base_dir, tiny_checkpoint):
    folder = base_dir / "models" / "gligen"
    folder.mkdir(parents=True)
    (folder / "checkpoint.safetensors").symlink_to(tiny_checkpoint)
    prompt = txt2img([CAT])
    prompt["20"]["inputs"]["gligen_name"] = "checkpoint.safetensors"
    message = _error(runtime, prompt)
    assert "GLIGENLoader" in message and "gligen_name" in message
    assert "checkpoint.safetensors is not a GLIGEN file" in message


@needs_samplers
def test_a_gligen_file_for_another_unet(runtime, base_dir):
    folder = base_dir / "models" / "gligen"
    folder.mkdir(parents=True)
    other = UNetConfig(
        model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(0, 1),
        context_dim=32,
    )  # fmt: skip
    _write_gligen(folder / "tiny-gligen.safetensors", other, text_dim=32)
    message = _error(runtime, txt2img([CAT]))
    assert "tiny-gligen.safetensors" in message and "7 gated layers" in message
    assert "4 transformers" in message and "positive conditioning" in message


@needs_samplers
def test_phrase_width_mismatch_names_node_inputs_and_file(runtime, base_dir):
    folder = base_dir / "models" / "gligen"
    folder.mkdir(parents=True)
    _write_gligen(folder / "tiny-gligen.safetensors", tiny_spec().unet, text_dim=48)
    message = _error(runtime, txt2img([CAT]))
    assert "GLIGENTextBoxApply" in message and "tiny-gligen.safetensors" in message
    assert "'clip'" in message and "48-wide" in message and "tiny.safetensors" in message


def test_a_clip_of_another_family_is_refused(runtime, gligen_file):
    from loom_sd15.gligen_nodes import GLIGENLoader, GLIGENTextBoxApply

    from loom.errors import LoomError
    from loom.testing import make_context

    class OtherClip:  # what an SDXL or Flux CLIP is to this node: not SD1.x's
        def encode(self, text):
            raise AssertionError("must not be asked")

    ctx = make_context(runtime)
    gligen = GLIGENLoader(gligen_name="tiny-gligen.safetensors").run(ctx)
    node = GLIGENTextBoxApply(
        conditioning_to=[], clip=OtherClip(), gligen_textbox_model=gligen, **CAT
    )
    with pytest.raises(LoomError) as caught:
        node.run(ctx)
    message = str(caught.value)
    assert "GLIGENTextBoxApply" in message and "'clip'" in message
    assert "tiny-gligen.safetensors" in message and "SD1.x" in message


def test_ui_workflow_widgets_map_to_comfyuis_inputs(runtime):
    """A UI-format GLIGEN pair as ComfyUI's frontend saves it (widget values in order)."""
    from loom.workflow.convert import convert_workflow

    def socket(name, kind, link):
        return {"name": name, "type": kind, "link": link}

    workflow = {
        "version": 0.4,
        "nodes": [
            {
                "id": 1,
                "type": "GLIGENLoader",
                "mode": 0,
                "inputs": [],
                "outputs": [{"name": "GLIGEN", "type": "GLIGEN", "links": [1]}],
                "widgets_values": ["gligen_sd14_textbox_pruned.safetensors"],
            },
            {
                "id": 2,
                "type": "GLIGENTextBoxApply",
                "mode": 0,
                "inputs": [
                    socket("conditioning_to", "CONDITIONING", None),
                    socket("clip", "CLIP", None),
                    socket("gligen_textbox_model", "GLIGEN", 1),
                ],
                "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": []}],
                "widgets_values": ["purple galaxy bottle", 256, 384, 64, 128],
            },
        ],
        "links": [[1, 1, 0, 2, 2, "GLIGEN"]],
    }
    prompt = convert_workflow(workflow, runtime.registry)
    assert prompt["1"]["inputs"] == {"gligen_name": "gligen_sd14_textbox_pruned.safetensors"}
    assert prompt["2"]["inputs"] == {
        "text": "purple galaxy bottle",
        "width": 256,
        "height": 384,
        "x": 64,
        "y": 128,
        "gligen_textbox_model": ["1", 0],
    }


@needs_samplers
def test_gligen_loads_through_the_memory_manager_under_a_budget(
    base_dir, gligen_file, loom_runtime
):
    """With ``--vram-budget`` on the CPU (a simulated device), the GLIGEN modules are a
    handle the manager loads with the UNet and evicts for the VAE, and the image is the
    unbudgeted one."""
    extra = [base_dir / "extra_model_paths.yaml"]
    plain = loom_runtime("sd15", "samplers", settings={"extra_model_paths": extra})
    budgeted = loom_runtime(
        "sd15", "samplers", settings={"extra_model_paths": extra, "vram_budget_bytes": BUDGET}
    )
    memory = budgeted.memory
    loads = []
    original_load = memory.load

    def recording_load(handles, extra_memory=0):
        handles = list(handles)
        loads.append([h.name for h in handles])
        return original_load(handles, extra_memory)

    memory.load = recording_load
    want = image(plain, txt2img([CAT, HAT]))
    got = image(budgeted, txt2img([CAT, HAT]))
    assert ["sd15-unet:tiny.safetensors", "gligen:tiny-gligen.safetensors"] in loads
    evicted = [e.name for e in memory.evictions]
    assert "gligen:tiny-gligen.safetensors" in evicted  # made room for the VAE
    # not bitwise: the small budget also splits cond and uncond into batches of one
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
