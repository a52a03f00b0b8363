"""T5TokenizerOptions on Flux's CLIP: ComfyUI's padding rule (end token, ``min_padding`` pad
tokens, then pad to ``min_length``; the options replace T5's own 256) with the real T5
tokenizer, and through the real executor the conditioning's length follows it."""

from __future__ import annotations

from flux_markers import needs_samplers
from loom_flux.clip import FluxClip
from loom_flux.t5 import packaged_tokenizer_dir
from test_flux_workflows import image_of, ksampler_flux, run

from loom.nodes.builtin.cond_nodes import T5TokenizerOptions
from loom.testing import make_context

#: "a photo of a cat" in T5's vocabulary (see test_flux_prompt.py), then the end token 1
TOKENS = [3, 9, 1202, 13, 3, 9, 1712]


def options(min_padding: int, min_length: int) -> FluxClip:
    clip = FluxClip(None, packaged_tokenizer_dir(), None)
    node = T5TokenizerOptions(clip=clip, min_padding=min_padding, min_length=min_length)
    out = node.run(make_context())
    assert clip.t5_padding is None  # the input CLIP keeps T5's own rule
    return out


def ids(clip: FluxClip) -> list[int]:
    return [int(t) for t, _ in clip.tokenize_t5("a photo of a cat")]


def test_default_options_drop_the_256_token_minimum():
    assert len(ids(FluxClip(None, packaged_tokenizer_dir(), None))) == 256
    assert ids(options(0, 0)) == [*TOKENS, 1]


def test_min_padding_adds_pad_tokens_after_the_end_token():
    assert ids(options(3, 0)) == [*TOKENS, 1, 0, 0, 0]


def test_min_length_pads_to_that_length_after_min_padding():
    assert ids(options(2, 20)) == [*TOKENS, 1] + [0] * 12
    assert ids(options(15, 20)) == [*TOKENS, 1] + [0] * 15  # already past min_length


def test_options_survive_a_clone():
    assert ids(options(1, 0).clone()) == [*TOKENS, 1, 0]


@needs_samplers
def test_executor_sampling_uses_the_padded_conditioning(runtime):
    plain = run(runtime, ksampler_flux())
    prompt = ksampler_flux()
    prompt["20"] = {
        "class_type": "T5TokenizerOptions",
        "inputs": {"clip": ["2", 0], "min_padding": 4, "min_length": 0},
    }
    prompt["4"]["inputs"]["clip"] = ["20", 0]
    padded = run(runtime, prompt)
    # "a red fox": 5 T5 tokens (3 9 1131 3 20400), the end token, 4 pad tokens; default 256
    assert padded.values["4"][0][0][0][0].shape[1] == 5 + 1 + 4
    assert plain.values["4"][0][0][0][0].shape[1] == 256
    assert padded.values["5"][0][0][0][0].shape[1] == 256  # the negative's CLIP is untouched
    assert float((image_of(padded) - image_of(plain)).abs().max()) > 1e-4
