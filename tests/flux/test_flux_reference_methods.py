"""Kontext reference-latent methods (ComfyUI's ``FluxKontextMultiReferenceLatentMethod``):
the position ids of each method, the timestep-0 modulation of ``index_timestep_zero``, the
node, and the method travelling from the conditioning to the DiT."""

from __future__ import annotations

import pytest
import torch
from loom_flux.dit import (
    FluxTransformer,
    Modulation,
    ReferencePlace,
    SplitVec,
    image_ids,
    patchify,
    reference_positions,
)
from loom_flux.model import FluxModel
from loom_flux.nodes import FluxKontextMultiReferenceLatentMethod
from loom_flux.tiny import dit_state, tiny_spec

#: a 8x12 latent (4x6 patches) and references of 8x12 and 6x4 latent pixels
SHAPES = [(8, 12), (6, 4)]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # both at time 1; the second below the first (6+8 rows is not taller than 4+12 columns)
        ("offset", [ReferencePlace(1, 0, 0), ReferencePlace(1, 8, 0)]),
        ("index", [ReferencePlace(1), ReferencePlace(2)]),
        ("index_timestep_zero", [ReferencePlace(1), ReferencePlace(2)]),
        # time 0, diagonally past the image (4*2 rows, 6*2 columns) and the references before
        ("uxo", [ReferencePlace(0, 8, 12), ReferencePlace(0, 16, 24)]),
        ("no such method", [ReferencePlace(1, 0, 0), ReferencePlace(1, 8, 0)]),
    ],
)
def test_reference_positions_follow_comfyui(method, expected):
    assert reference_positions(method, SHAPES, 4, 6) == expected


def test_offset_places_a_taller_reference_beside_the_first():
    assert reference_positions("offset", [(4, 4), (8, 2)], 2, 2)[1] == ReferencePlace(1, 0, 4)


def test_node_stores_the_method_and_spells_uxo_as_the_model_does():
    cond = [[torch.zeros(1, 3, 4), {"guidance": 2.0}]]
    out = FluxKontextMultiReferenceLatentMethod(
        conditioning=cond, reference_latents_method="uxo/uno"
    ).run(None)
    assert out[0][1] == {"guidance": 2.0, "reference_latents_method": "uxo"}
    assert cond[0][1] == {"guidance": 2.0}  # the input is not modified
    index = FluxKontextMultiReferenceLatentMethod(
        conditioning=cond, reference_latents_method="index"
    ).run(None)
    assert index[0][1]["reference_latents_method"] == "index"


def test_split_vec_modulates_each_token_with_its_own_vector():
    torch.manual_seed(0)
    mod = Modulation(8, double=False)
    main, zero = torch.randn(2, 8), torch.randn(2, 8)
    split = mod(SplitVec(main, zero, 3, 5))
    plain_main, plain_zero = mod(main), mod(zero)
    for got, a, b in zip(split, plain_main, plain_zero, strict=True):
        assert got.shape == (2, 5, 8)
        assert torch.equal(got[:, :3], a.expand(-1, 3, -1))
        assert torch.equal(got[:, 3:], b.expand(-1, 2, -1))


@pytest.fixture(scope="module")
def dit():
    config = tiny_spec().dit
    model = FluxTransformer(config).eval()
    model.load_state_dict(dit_state(config, seed=6))
    return model


def _inputs(sigma: float = 0.6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 4, 4, generator=g)
    refs = [torch.randn(1, 16, 4, 6, generator=g), torch.randn(1, 16, 4, 4, generator=g)]
    args = (
        torch.tensor([sigma]),
        torch.randn(1, 5, 32, generator=g),
        torch.randn(1, 32, generator=g),
    )
    return x, refs, args


def test_index_method_puts_the_nth_reference_at_time_n(dit):
    x, refs, args = _inputs()
    first = image_ids(1, 2, 3, x.device).clone()
    first[..., 0] = 1
    second = image_ids(1, 2, 2, x.device).clone()
    second[..., 0] = 2
    tokens = torch.cat([patchify(x), patchify(refs[0]), patchify(refs[1])], dim=1)
    ids = torch.cat([image_ids(1, 2, 2, x.device), first, second], dim=1)
    guidance = torch.tensor([2.5])
    with torch.no_grad():
        got = dit(x, *args, guidance, ref_latents=refs, ref_method="index")
        out = dit.forward_tokens(
            tokens, ids, args[1], torch.zeros(1, 5, 3), args[0], args[2], guidance
        )
        offset = dit(x, *args, guidance, ref_latents=refs, ref_method="offset")
    expected = out[:, :4].reshape(1, 2, 2, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, 16, 4, 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(got, offset, atol=1e-4)


def test_index_timestep_zero_modulates_references_as_at_timestep_zero(dit):
    guidance = torch.tensor([2.5])
    with torch.no_grad():
        x, refs, args = _inputs(sigma=0.0)  # at timestep 0 both vectors are the same
        zero = dit(x, *args, guidance, ref_latents=refs, ref_method="index_timestep_zero")
        index = dit(x, *args, guidance, ref_latents=refs, ref_method="index")
        torch.testing.assert_close(zero, index, rtol=0, atol=1e-6)
        x, refs, args = _inputs(sigma=0.6)
        zero = dit(x, *args, guidance, ref_latents=refs, ref_method="index_timestep_zero")
        index = dit(x, *args, guidance, ref_latents=refs, ref_method="index")
        plain = dit(x, *args, guidance, ref_method="index_timestep_zero")  # no references
        assert not torch.allclose(zero, index, atol=1e-4)
        torch.testing.assert_close(plain, dit(x, *args, guidance), rtol=0, atol=0)


def test_the_method_travels_from_the_conditioning_to_the_dit(dit, monkeypatch):
    model = FluxModel(dit)
    ref = torch.randn(1, 16, 4, 4)
    options = {
        "pooled_output": torch.zeros(1, 32),
        "reference_latents": [ref],
        "reference_latents_method": "uxo",
    }
    conds = model.extra_conds(options, noise=torch.zeros(1, 16, 4, 4))
    assert conds["ref_latents_method"] == "uxo"
    seen = {}

    def spy(*args, **kwargs):
        seen["method"] = kwargs["ref_method"]
        return torch.zeros(1, 16, 4, 4)

    monkeypatch.setattr(model.module, "forward", spy)
    cond = {"c_crossattn": torch.zeros(1, 5, 32), **conds}
    model.apply_model(torch.zeros(1, 16, 4, 4), torch.tensor([0.5]), cond)
    assert seen["method"] == "uxo"
    del cond["ref_latents_method"]  # no method node: Kontext's default
    model.apply_model(torch.zeros(1, 16, 4, 4), torch.tensor([0.5]), cond)
    assert seen["method"] == "offset"
