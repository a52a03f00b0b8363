"""An NVFP4 T5-XXL (``comfy_quant`` format ``nvfp4`` on its linears, quantised by
comfy-kitchen) loads through the scaled-fp8 path with nothing T5-specific: its linears stay
packed and it matches transformers' T5 given the weights ComfyUI dequantises."""

from __future__ import annotations

import pytest
import torch
from loom_flux.t5 import T5Config, T5View, build_t5, t5_config
from loom_flux.tiny import t5_state

from loom.memory import (
    NvFp4Linear,
    ScaledView,
    build_on_meta,
    is_scaled_fp8,
    load_into_module,
    scale_layers,
)
from loom.testing.quantized_files import nvfp4_state

pytest.importorskip("comfy_kitchen")

CONFIG = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
LINEARS = ("q.weight", "k.weight", "v.weight", "o.weight", "wi_0.weight", "wi_1.weight")


def test_an_nvfp4_t5_stays_packed_and_matches_transformers():
    from transformers import T5EncoderModel

    state = t5_state(CONFIG, seed=3)
    stored, dequantized = nvfp4_state(state, lambda key: key.endswith((*LINEARS, "wo.weight")))
    shapes = {k: tuple(v.shape) for k, v in stored.items()}
    assert t5_config(shapes) == CONFIG and is_scaled_fp8(shapes)
    module = build_on_meta(build_t5, CONFIG)
    view = ScaledView(T5View(stored))
    scale_layers(module, view.layers)
    load_into_module(module, view)
    q = module.encoder.block[0].layer[0].SelfAttention.q
    assert isinstance(q, NvFp4Linear) and q.weight.dtype == torch.uint8

    reference = T5EncoderModel(CONFIG.to_transformers()).eval()
    weights = {**dequantized, "encoder.embed_tokens.weight": dequantized["shared.weight"]}
    reference.load_state_dict(weights)
    ids = torch.randint(0, 128, (2, 19), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = module(input_ids=ids).last_hidden_state
        want = reference(input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)  # transformers' own T5 maths
