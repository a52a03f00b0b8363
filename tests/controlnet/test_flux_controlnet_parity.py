"""Flux ControlNets: InstantX files (diffusers' ``FluxControlNetModel`` layout) load and give
diffusers' residuals at identical weights (float32); the residuals reach the Flux DiT's
blocks as diffusers' transformer adds them; ComfyUI's spreading rules."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("loom_flux")

from loom_controlnet.flux_model import spread  # noqa: E402
from loom_controlnet.loader import load_controlnet  # noqa: E402
from loom_flux.dit import FluxTransformer, image_ids, patchify  # noqa: E402
from loom_flux.tiny import tiny_spec  # noqa: E402

from loom.memory import write_safetensors  # noqa: E402
from loom.types import ControlResiduals  # noqa: E402

TOL = 1e-4


def randomized(module: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    """Every parameter random (diffusers zero-initialises the ControlNet's output layers)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return module.eval()


def instantx_reference(depth: int, single: int, modes: int | None = None, seed: int = 0):
    config = tiny_spec().dit
    model = diffusers.FluxControlNetModel(
        patch_size=1,
        in_channels=config.in_channels,
        num_layers=depth,
        num_single_layers=single,
        attention_head_dim=config.head_dim,
        num_attention_heads=config.num_heads,
        joint_attention_dim=config.context_dim,
        pooled_projection_dim=config.vec_dim,
        guidance_embeds=True,
        axes_dims_rope=list(config.axes_dim),
        num_mode=modes,
    )
    return randomized(model, seed)


def saved(tmp_path, module: torch.nn.Module, name: str):
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    return write_safetensors(tmp_path / name, state)


def inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, 16, 6, 10, generator=g),  # latent
        torch.randn(batch, 16, 6, 10, generator=g),  # VAE-encoded hint
        torch.randn(batch, 7, 32, generator=g),  # T5 tokens
        torch.randn(batch, 32, generator=g),  # pooled CLIP-L
        torch.tensor([1.0, 0.37][:batch]),
        torch.tensor([3.5, 2.0][:batch]),
    )


@pytest.mark.parametrize(("depth", "single", "mode"), [(2, 2, None), (1, 3, 2)])
def test_instantx_residuals_match_diffusers(tmp_path, depth, single, mode):
    modes = None if mode is None else 4
    reference = instantx_reference(depth, single, modes)
    path = saved(tmp_path, reference, "instantx.safetensors")
    control = load_controlnet(path)
    assert control.config.latent_input and control.config.union_modes == (modes or 0)
    assert control.config.dit.depth == depth and control.config.dit.depth_single == single
    x, hint, context, pooled, sigma, guidance = inputs()
    with torch.no_grad():
        doubles, singles = control.module(x, hint, sigma, context, pooled, guidance, mode)
        expected = reference(
            hidden_states=patchify(x),
            controlnet_cond=patchify(hint),
            controlnet_mode=None if mode is None else torch.tensor([[mode], [mode]]),
            encoder_hidden_states=context,
            pooled_projections=pooled,
            timestep=sigma,
            img_ids=image_ids(1, 3, 5, x.device)[0],
            txt_ids=torch.zeros(7, 3),
            guidance=guidance,
            return_dict=False,
        )
    ours = [*doubles, *singles]
    theirs = [*expected[0], *expected[1]]
    assert len(ours) == len(theirs) == depth + single
    diff = max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))
    print(f"flux instantx controlnet max abs diff {diff:.3g}")
    assert diff <= TOL
    assert min(a.abs().max().item() for a in ours) > 1e-2  # not trivially zero


def test_dit_adds_residuals_as_diffusers_transformer(tmp_path):
    """Per-block residuals in the DiT equal diffusers' ``controlnet_block_samples``."""
    from loom_flux.convert import to_diffusers

    config = tiny_spec().dit
    ours = randomized(FluxTransformer(config), 3)
    reference = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        num_layers=config.depth,
        num_single_layers=config.depth_single,
        attention_head_dim=config.head_dim,
        num_attention_heads=config.num_heads,
        joint_attention_dim=config.context_dim,
        pooled_projection_dim=config.vec_dim,
        guidance_embeds=True,
        axes_dims_rope=config.axes_dim,
    ).eval()
    reference.load_state_dict(to_diffusers(ours.state_dict()), strict=True)
    x, _, context, pooled, sigma, guidance = inputs()
    g = torch.Generator().manual_seed(7)
    doubles = [torch.randn(2, 15, 32, generator=g) for _ in range(config.depth)]
    singles = [torch.randn(2, 15, 32, generator=g) for _ in range(config.depth_single)]
    with torch.no_grad():
        plain = ours(x, sigma, context, pooled, guidance)
        a = ours(
            x,
            sigma,
            context,
            pooled,
            guidance,
            control=ControlResiduals(input=tuple(doubles), output=tuple(singles)),
        )
        b = reference(
            hidden_states=patchify(x),
            encoder_hidden_states=context,
            pooled_projections=pooled,
            timestep=sigma,
            img_ids=image_ids(1, 3, 5, x.device)[0],
            txt_ids=torch.zeros(7, 3),
            guidance=guidance,
            controlnet_block_samples=doubles,
            controlnet_single_block_samples=singles,
        ).sample
    b = b.reshape(2, 3, 5, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(2, 16, 6, 10)
    diff = (a - b).abs().max().item()
    print(f"flux dit with control residuals max abs diff {diff:.3g}")
    assert diff <= TOL
    assert (a - plain).abs().max().item() > 1e-2


def test_residuals_spread_over_flux_blocks_as_comfyui():
    # InstantX (5 double blocks -> 19): each residual on 4 consecutive blocks
    assert spread(tuple("abcde"), 19, consecutive=True) == tuple("aaaabbbbccccddddeee")
    # XLabs (2 double blocks -> 19): the list repeated
    assert spread(("a", "b"), 19, consecutive=False) == tuple("ab" * 9 + "a")
    assert spread(tuple(range(10)), 38, consecutive=True)[:9] == (0, 0, 0, 0, 1, 1, 1, 1, 2)
    assert spread((), 38, consecutive=True) == ()


@pytest.mark.parametrize("kind", ["xlabs", "mistoline"])
def test_pixel_hint_files_encode_the_hint_then_run_the_latent_path(tmp_path, kind):
    """XLabs and MistoLine: the image, scaled to [-1, 1] and taken down 8x by the file's hint
    encoder, feeds the same trunk an InstantX file's latent does; MistoLine's outputs pass a
    SiLU."""
    import attrs
    import torch.nn.functional as F
    from loom_controlnet.flux_model import FluxControlNet
    from loom_controlnet.tiny import write_tiny_flux_controlnet

    path = tmp_path / f"{kind}.safetensors"
    control = load_controlnet(write_tiny_flux_controlnet(path, tiny_spec().dit, kind=kind))
    assert control.config.kind == {"xlabs": "XLabs", "mistoline": "MistoLine"}[kind]
    module = control.module
    encoder = module.input_cond_block if kind == "mistoline" else module.input_hint_block
    twin = FluxControlNet(attrs.evolve(control.config, latent_input=True, mistoline=False))
    state = {k.replace(".linear.", "."): v for k, v in module.state_dict().items()}
    missing, _ = twin.load_state_dict(state, strict=False)
    assert missing == []
    x, _, context, pooled, sigma, guidance = inputs()
    image = torch.rand(2, 3, 48, 80, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        doubles, singles = module(x, image, sigma, context, pooled, guidance)
        latent = encoder(image * 2 - 1)
        assert latent.shape == (2, 16, 6, 10)
        expected = twin(x, latent, sigma, context, pooled, guidance)
    if kind == "mistoline":
        expected = tuple(tuple(F.silu(t) for t in group) for group in expected)
    pairs = list(zip([*doubles, *singles], [*expected[0], *expected[1]], strict=True))
    assert max((a - b).abs().max().item() for a, b in pairs) <= TOL
