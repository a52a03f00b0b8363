"""Scaled-fp8 files in both of ComfyUI's layouts (the old ``scaled_fp8`` / ``scale_weight`` /
``scale_input`` one and the ``weight_scale`` / ``input_scale`` / ``comfy_quant`` one ComfyUI
0.7+ converts it to and saves) seen as :class:`ScaledLinear` modules name them, and loaded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loom.memory import ScaledLinear, ScaledView, ops, quant_config_tensors, scale_layers

FP8 = torch.float8_e4m3fn


def _config(text: str) -> torch.Tensor:
    return torch.tensor(list(text.encode()), dtype=torch.uint8)


def _old_file(marker_elements: int = 0) -> dict[str, torch.Tensor]:
    return {
        "scaled_fp8": torch.zeros(marker_elements, dtype=FP8),
        "a.weight": torch.ones(3, 4).to(FP8),
        "a.bias": torch.zeros(3),
        "a.scale_weight": torch.tensor([0.5]),
        "a.scale_input": torch.tensor(0.25),
        "b.weight": torch.ones(2, 3).to(FP8),
        "b.bias": torch.zeros(2),
        "b.scale_weight": torch.tensor(2.0),
        "b.scale_input": torch.tensor(1.0),
    }


def test_an_old_layout_file_is_seen_under_comfyuis_new_names():
    view = ScaledView(_old_file())
    assert set(view) == {
        "a.weight",
        "a.bias",
        "a.weight_scale",
        "a.input_scale",
        "b.weight",
        "b.bias",
        "b.weight_scale",
    }  # the marker and b's input scale of exactly 1.0 dropped, as ComfyUI's conversion does
    assert torch.equal(view["a.weight_scale"], torch.tensor([0.5]))  # shape kept
    assert torch.equal(view["a.input_scale"], torch.tensor(0.25))
    a, b = view.layers
    assert (a.name, a.scale_shape, a.has_input_scale) == ("a", (1,), True)
    assert (b.name, b.scale_shape, b.has_input_scale) == ("b", (), False)
    assert a.config() == {"format": "float8_e4m3fn"}


def test_a_two_element_marker_asks_for_full_precision_matmul():
    (a, _) = ScaledView(_old_file(marker_elements=2)).layers
    assert a.config() == {"format": "float8_e4m3fn", "full_precision_matrix_mult": True}


def test_a_new_layout_file_passes_through():
    source = {
        "a.weight": torch.ones(3, 4).to(FP8),
        "a.weight_scale": torch.tensor(0.5),
        "a.input_scale": torch.tensor(1.0),  # kept: only old files' 1.0 scales are dropped
        "a.comfy_quant": _config('{"format": "float8_e4m3fn", "full_precision_matrix_mult": true}'),
        "b.weight": torch.ones(2, 3),
    }
    view = ScaledView(source)
    assert set(view) == {"a.weight", "a.weight_scale", "a.input_scale", "b.weight"}
    (a,) = view.layers
    assert a.has_input_scale and a.full_precision_matrix_mult


def test_an_unsupported_quantisation_format_is_named():
    source = {"a.weight": torch.ones(3, 4), "a.comfy_quant": _config('{"format": "int4_awq"}')}
    with pytest.raises(ValueError, match=r"a\.comfy_quant.*'int4_awq'.*nvfp4"):
        ScaledView(source)


@pytest.mark.parametrize("text", ['["nvfp4"]', '{"format": ', "\xff"])
def test_a_quantisation_config_that_is_not_a_json_object_is_named(text):
    config = torch.tensor(list(text.encode("latin-1")), dtype=torch.uint8)
    source = {"a.weight": torch.ones(3, 4), "a.comfy_quant": config}
    with pytest.raises(ValueError, match=r"a\.comfy_quant: not a quantisation config"):
        ScaledView(source)


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = ops.Linear(4, 3)
        self.b = ops.Linear(3, 2)


def test_scaled_layers_load_and_save_back_comfyuis_tensors():
    view = ScaledView(_old_file(marker_elements=2))
    module = Pair()
    scale_layers(module, view.layers)
    module.load_state_dict(dict(view.items()), strict=True, assign=True)
    assert isinstance(module.a, ScaledLinear) and isinstance(module.b, ScaledLinear)
    saved = module.state_dict() | quant_config_tensors(module)
    assert set(saved) == set(view) | {"a.comfy_quant", "b.comfy_quant"}
    expected = b'{"format": "float8_e4m3fn", "full_precision_matrix_mult": true}'
    assert bytes(saved["b.comfy_quant"].tolist()) == expected
    x = torch.randn(1, 4)
    want = nn.functional.linear(x, torch.ones(3, 4) * 0.5)
    torch.testing.assert_close(module.a(x), want, rtol=0, atol=0)


def test_without_torchs_e8m0_dtype_fp8_weights_still_dequantise(monkeypatch):
    # torch before 2.7 has no float8_e8m0fnu (MXFP8's scale dtype); Loom supports torch 2.1 on
    from loom.memory import dequantized_weights

    monkeypatch.delattr(torch, "float8_e8m0fnu")
    state = {"a.weight": torch.ones(3, 4).to(FP8), "a.weight_scale": torch.tensor(0.5)}
    assert torch.equal(dequantized_weights(state)["a.weight"], torch.full((3, 4), 0.5))


def test_without_torchs_e8m0_dtype_an_mxfp8_file_is_refused_by_name(monkeypatch):
    monkeypatch.delattr(torch, "float8_e8m0fnu")
    source = {
        "a.weight": torch.ones(32, 32).to(FP8),
        "a.weight_scale": torch.zeros(128, 4, dtype=torch.uint8),
        "a.comfy_quant": _config('{"format": "mxfp8"}'),
    }
    with pytest.raises(ValueError, match=r"a\.comfy_quant: an mxfp8 layer needs torch 2\.7"):
        ScaledView(source)
