"""The Flux DiT against diffusers' FluxTransformer2DModel at identical weights (float32)."""

from __future__ import annotations

import pytest
import torch
from loom_flux.convert import DiffusersView, to_diffusers
from loom_flux.dit import FluxConfig, FluxTransformer, image_ids, patchify
from loom_flux.tiny import tiny_spec

diffusers = pytest.importorskip("diffusers")

TOL = 1e-4


def tiny_config(guidance: bool = True) -> FluxConfig:
    return tiny_spec(guidance).dit


def randomized(module: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return module.eval()


def reference_for(config: FluxConfig) -> torch.nn.Module:
    return diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        num_layers=config.depth,
        num_single_layers=config.depth_single,
        attention_head_dim=config.head_dim,
        num_attention_heads=config.num_heads,
        joint_attention_dim=config.context_dim,
        pooled_projection_dim=config.vec_dim,
        guidance_embeds=config.guidance_embed,
        axes_dims_rope=config.axes_dim,
    ).eval()


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_dit_matches_diffusers(guidance):
    config = tiny_config(guidance)
    ours = randomized(FluxTransformer(config), 0)
    reference = reference_for(config)
    reference.load_state_dict(to_diffusers(ours.state_dict()), strict=True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 6, 10, generator=g)
    context = torch.randn(2, 7, 32, generator=g)
    pooled = torch.randn(2, 32, generator=g)
    sigma = torch.tensor([1.0, 0.37])
    guidance_scale = torch.tensor([3.5, 2.0]) if guidance else None
    with torch.no_grad():
        a = ours(x, sigma, context, pooled, guidance_scale)
        img_ids = image_ids(1, 3, 5, x.device)[0]
        b = reference(
            hidden_states=patchify(x),
            encoder_hidden_states=context,
            pooled_projections=pooled,
            timestep=sigma,
            img_ids=img_ids,
            txt_ids=torch.zeros(7, 3),
            guidance=guidance_scale,
        ).sample
    b = b.reshape(2, 3, 5, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(2, 16, 6, 10)
    diff = (a - b).abs().max().item()
    print(f"flux dit max abs diff {diff:.3g}")
    assert a.shape == x.shape
    assert diff <= TOL


def test_diffusers_layout_converts_back_exactly():
    ours = randomized(FluxTransformer(tiny_config()), 3)
    state = ours.state_dict()
    view = DiffusersView(to_diffusers(state), "tiny.safetensors")
    assert set(view) == set(state)
    for key, tensor in state.items():
        assert torch.equal(view[key], tensor), key


def test_odd_latent_sizes_are_padded_and_cropped():
    ours = randomized(FluxTransformer(tiny_config(guidance=False)), 4)
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():
        out = ours(x, torch.tensor([0.5]), torch.randn(1, 3, 32), torch.randn(1, 32))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
