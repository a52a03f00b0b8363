"""CLIPTextEncodeControlnet: the text a ControlNet attends to instead of the prompt's. The
signal reads the batched ``cross_attn_controlnet`` option (ComfyUI's
``cond.get('crossattn_controlnet', cond['c_crossattn'])``), and through the real executor an
image changes with that text only, and equals the plain ControlNet image when the text is the
prompt itself."""

from __future__ import annotations

import copy

import torch
from test_controlnet_signal import MODEL, controls, signal  # noqa: F401 (fixture)
from test_controlnet_txt2img import (  # noqa: F401 (fixtures)
    base_dir,
    executor,
    rendered,
    tiny_checkpoint,
    txt2img,
)

from loom.types import CONTROL_CONTEXT_INPUT

A = {"name": "a.safetensors"}


def residuals(sig, cond):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    return sig.residuals(x, torch.full((2,), 1.0), cond, MODEL, 2)


def test_signal_attends_to_the_controlnet_text_when_the_call_carries_it(controls):  # noqa: F811
    g = torch.Generator().manual_seed(2)
    prompt, other = torch.randn(2, 5, 32, generator=g), torch.randn(2, 7, 32, generator=g)
    sig = signal(controls["a"])
    with_text = residuals(sig, {"c_crossattn": prompt, CONTROL_CONTEXT_INPUT: other})
    as_prompt = residuals(sig, {"c_crossattn": other})
    plain = residuals(sig, {"c_crossattn": prompt})
    for got, want in zip(with_text.output, as_prompt.output, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(with_text.middle[0], as_prompt.middle[0])
    # the middle block sits behind cross-attention: the text changes it
    assert not torch.allclose(with_text.middle[0], plain.middle[0], atol=1e-4)


def with_controlnet_text(text: str) -> dict:
    prompt = copy.deepcopy(txt2img(A))
    prompt["50"] = {
        "class_type": "CLIPTextEncodeControlnet",
        "inputs": {
            "clip": ["4", 1],
            "conditioning": prompt["3"]["inputs"]["positive"],
            "text": text,
        },
    }
    prompt["3"]["inputs"]["positive"] = ["50", 0]
    return prompt


def test_controlnet_text_changes_only_what_the_controlnet_sees(executor):  # noqa: F811
    plain = rendered(executor, txt2img(A))
    same_text = rendered(executor, with_controlnet_text("a glass bottle"))
    other_text = rendered(executor, with_controlnet_text("a red cube on grass"))
    # the prompt's own text as controlnet text: the same image (batching may differ: 1e-4)
    torch.testing.assert_close(same_text, plain, atol=1e-4, rtol=0)
    assert float((other_text - plain).abs().max()) > 1e-3
