"""HypernetworkLoader: tiny A1111-layout hypernetworks saved as safetensors, their MLPs
against a hand computation of ComfyUI's layer rule, their effect on an attention's key and
value inputs against a hand computation, a txt2img through the executor, and refusals."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from loom_sd15.hypernetwork import HypernetworkPatch, load_hypernetwork
from loom_sd15.unet import CrossAttention, attention
from sd15_markers import needs_samplers
from test_sd15_workflows import image_of, run, txt2img

from loom.errors import ModelFileError
from loom.memory import write_safetensors

#: the tiny UNet's text width and its attention level's token width
WIDTHS = (32, 64)


def hypernetwork_state(widths=WIDTHS, hidden=2, layer_norm=False, seed=0) -> dict:
    """A1111's layout flattened: ``<dim>.<0|1>.linear.<n>.weight|bias``, ``n`` counting the
    Sequential's modules (linear, activation, [layer norm], linear, ...)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for dim in widths:
        for which in (0, 1):
            sizes = [dim, dim * hidden, dim]
            n = 0
            for i in range(len(sizes) - 1):
                state[f"{dim}.{which}.linear.{n}.weight"] = (
                    torch.randn(sizes[i + 1], sizes[i], generator=gen) * 0.1
                )
                state[f"{dim}.{which}.linear.{n}.bias"] = torch.randn(sizes[i + 1], generator=gen)
                n += 2  # the activation after it
                if layer_norm:
                    state[f"{dim}.{which}.linear.{n}.weight"] = (
                        1 + torch.randn(sizes[i + 1], generator=gen) * 0.1
                    )
                    state[f"{dim}.{which}.linear.{n}.bias"] = torch.randn(
                        sizes[i + 1], generator=gen
                    )
                    n += 1
    return state


def save(path, state, **metadata):
    return write_safetensors(path, state, metadata={k: str(v) for k, v in metadata.items()})


def test_mlp_is_comfyuis_layer_rule(tmp_path):
    """relu, no layer norm: linear, relu, linear (no activation on the output)."""
    state = hypernetwork_state()
    mlps = load_hypernetwork(save(tmp_path / "h.safetensors", state, activation_func="relu"))
    assert sorted(mlps) == list(WIDTHS)
    x = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(1))
    w = {k: v for k, v in state.items() if k.startswith("32.1.")}
    hidden = F.relu(F.linear(x, w["32.1.linear.0.weight"], w["32.1.linear.0.bias"]))
    expected = F.linear(hidden, w["32.1.linear.2.weight"], w["32.1.linear.2.bias"])
    with torch.no_grad():
        torch.testing.assert_close(mlps[32][1](x), expected)


def test_layer_norm_mlp_is_comfyuis_layer_rule(tmp_path):
    """With layer norm ComfyUI counts the norms as entries: the last linear is not the last
    entry, so it is activated too (unlike A1111), then normed."""
    state = hypernetwork_state(layer_norm=True)
    path = save(tmp_path / "h.safetensors", state, activation_func="tanh", is_layer_norm="True")
    mlps = load_hypernetwork(path)
    w = {k: v for k, v in state.items() if k.startswith("64.0.")}
    x = torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(2))
    h = torch.tanh(F.linear(x, w["64.0.linear.0.weight"], w["64.0.linear.0.bias"]))
    h = F.layer_norm(h, (128,), w["64.0.linear.2.weight"], w["64.0.linear.2.bias"])
    h = torch.tanh(F.linear(h, w["64.0.linear.3.weight"], w["64.0.linear.3.bias"]))
    h = F.layer_norm(h, (64,), w["64.0.linear.5.weight"], w["64.0.linear.5.bias"])
    with torch.no_grad():
        torch.testing.assert_close(mlps[64][0](x), h)


def test_patch_rewrites_the_key_and_value_inputs_of_attention(tmp_path):
    mlps = load_hypernetwork(save(tmp_path / "h.safetensors", hypernetwork_state()))
    torch.manual_seed(0)
    attn = CrossAttention(64, 32, heads=8, head_dim=8).eval()
    gen = torch.Generator().manual_seed(3)
    x, context = torch.randn(2, 16, 64, generator=gen), torch.randn(2, 7, 32, generator=gen)
    patch = HypernetworkPatch(mlps, 0.7)
    with torch.no_grad():
        got = attn(x, context, input_patches=[patch])
        key = context + mlps[32][0](context) * 0.7
        value = context + mlps[32][1](context) * 0.7
        q, k, v = attn.to_q(x), attn.to_k(key), attn.to_v(value)
        expected = attn.to_out(attention(q, k, v, 8))
        torch.testing.assert_close(got, expected)
        # self-attention: the key and value inputs are the tokens (width 64)
        attn_self = CrossAttention(64, None, heads=8, head_dim=8).eval()
        got_self = attn_self(x, None, input_patches=[patch])
        k_in, v_in = x + mlps[64][0](x) * 0.7, x + mlps[64][1](x) * 0.7
        q, k, v = attn_self.to_q(x), attn_self.to_k(k_in), attn_self.to_v(v_in)
        torch.testing.assert_close(got_self, attn_self.to_out(attention(q, k, v, 8)))
        # a width the hypernetwork has no layers for is left alone
        other = torch.randn(2, 7, 48, generator=gen)
        assert patch(x, other, other) == (x, other, other)


@pytest.fixture
def hypernetworks(runtime):
    folder = runtime.settings.base_directory / "models" / "hypernetworks"
    folder.mkdir(parents=True, exist_ok=True)
    save(folder / "style.safetensors", hypernetwork_state(seed=5), activation_func="relu")
    (folder / "old.pt").write_bytes(b"\x80\x04not loaded")
    save(folder / "odd.safetensors", {"768.0.weird": torch.zeros(1)})
    return folder


def with_hypernetwork(name: str, strength: float) -> dict:
    prompt = copy.deepcopy(txt2img())
    prompt["20"] = {
        "class_type": "HypernetworkLoader",
        "inputs": {"model": ["4", 0], "hypernetwork_name": name, "strength": strength},
    }
    prompt["3"]["inputs"]["model"] = ["20", 0]
    return prompt


@needs_samplers
def test_txt2img_with_a_hypernetwork(runtime, hypernetworks):
    plain = image_of(run(runtime, txt2img()))
    styled = image_of(run(runtime, with_hypernetwork("style.safetensors", 1.0)))
    assert float((styled - plain).abs().max()) > 1e-3
    assert torch.equal(styled, image_of(run(runtime, with_hypernetwork("style.safetensors", 1.0))))
    # strength 0 adds nothing: the plain image
    zero = image_of(run(runtime, with_hypernetwork("style.safetensors", 0.0)))
    torch.testing.assert_close(zero, plain, atol=1e-6, rtol=0)


def run_error(runtime, prompt) -> str:
    from loom.executor.executor import Executor

    executor = Executor(runtime)
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is not None
    return result.error["exception_message"]


@needs_samplers
def test_a_pickle_file_is_refused_naming_node_input_and_file(runtime, hypernetworks):
    message = run_error(runtime, with_hypernetwork("old.pt", 1.0))
    assert "HypernetworkLoader: input 'hypernetwork_name'" in message
    assert "old.pt" in message and "only .safetensors" in message


@needs_samplers
def test_a_file_in_another_layout_is_refused_naming_the_key(runtime, hypernetworks):
    message = run_error(runtime, with_hypernetwork("odd.safetensors", 1.0))
    assert "HypernetworkLoader: input 'hypernetwork_name'" in message
    assert "odd.safetensors" in message and "'768.0.weird'" in message


def test_unknown_activation_is_refused(tmp_path):
    path = save(tmp_path / "h.safetensors", hypernetwork_state(), activation_func="gelu")
    with pytest.raises(ModelFileError, match="unsupported activation_func 'gelu'"):
        load_hypernetwork(path)


def test_object_info_entry(runtime):
    from loom.nodes.object_info import to_json

    info = to_json(runtime.registry.get_node("HypernetworkLoader"), runtime.registry)
    required = info["input"]["required"]
    assert list(required) == ["model", "hypernetwork_name", "strength"]
    assert required["strength"] == [
        "FLOAT",
        {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01},
    ]
    assert info["output"] == ["MODEL"]
    assert info["category"] == "loaders"
    assert info["python_module"] == "comfy_extras.nodes_hypernetwork"
