"""Union ControlNets (ControlNet++): a diffusers ``ControlNetUnionModel`` file loads; the type
embedding and the transformer block equal diffusers' at identical weights; the network
follows ComfyUI's rule (one hint: encoded hint + projection of (its mean + the type's
embedding) through the block; auto: the plain hint path); SetUnionControlNetType picks it."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("loom_sdxl")

TEXT = 16
TYPES = 8


def reference(seed: int = 0):
    from diffusers.models.controlnets.controlnet_union import ControlNetUnionModel

    torch.manual_seed(seed)
    model = ControlNetUnionModel(
        in_channels=4,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        layers_per_block=2,
        cross_attention_dim=96,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(1, 1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=TEXT + 6 * 256,
        norm_num_groups=32,
        conditioning_embedding_out_channels=(16, 32, 96, 256),  # ControlNet 1.x widths
        num_control_type=TYPES,
        num_trans_channel=32,
        num_trans_head=8,
        num_proj_channel=32,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                if name.endswith("weight"):
                    param.normal_(1.0, 0.05, generator=generator)
                    continue
            fan_in = max(1, param[0].numel()) if param.ndim > 1 else 1
            param.normal_(0.0, min(0.2, fan_in**-0.5), generator=generator)
    return model.eval()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from loom_controlnet.loader import load_controlnet
    from safetensors.torch import save_file

    model = reference()
    path = tmp_path_factory.mktemp("union") / "union-promax.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, load_controlnet(path)


def test_union_file_loads_with_its_parts(loaded):
    model, control = loaded
    assert control.config.union_types == TYPES and control.config.union_width == 32
    ours = control.module
    assert torch.equal(ours.task_embedding, model.task_embedding)
    fused = model.transformer_layes[0].attn.in_proj_weight
    assert torch.equal(ours.transformer_layes[0].attn.in_proj.weight, fused)


def test_type_embedding_and_block_match_diffusers(loaded):
    model, control = loaded
    ours = control.module
    for types in ([], [3]):
        one_hot = torch.zeros(1, TYPES)
        one_hot[0, types] = 1.0
        with torch.no_grad():
            theirs = model.control_add_embedding(
                model.control_type_proj(one_hot.flatten()).reshape(1, -1)
            )
            mine = ours.control_add_embedding(types, torch.float32, torch.device("cpu"))
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    tokens = torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            ours.transformer_layes(tokens), model.transformer_layes[0](tokens), atol=1e-5, rtol=1e-5
        )


class Fixed(torch.nn.Module):
    """A hint encoder that returns a given tensor."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, _hint: torch.Tensor) -> torch.Tensor:
        return self.value


def test_network_follows_comfyuis_union_rule(loaded):
    from loom_controlnet.model import ControlNet, ControlNetConfig

    _, control = loaded
    ours = control.module
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g)
    hint = torch.rand(1, 3, 64, 64, generator=g)
    t = torch.tensor([500.0, 20.0])
    context = torch.randn(2, 7, 96, generator=g)
    y = torch.randn(2, TEXT + 6 * 256, generator=g)
    # the same network written out: a plain ControlNet whose time embedding gets the type's
    # embedding and whose hint encoder output gets the union projection
    plain = ControlNet(ControlNetConfig(control.config.unet, 3, control.config.unet_class))
    plain.load_state_dict(ours.state_dict(), strict=False)
    plain.eval()
    with torch.no_grad():
        for control_type in (None, 3):
            types = [] if control_type is None else [control_type]
            add = ours.control_add_embedding(types, torch.float32, torch.device("cpu"))
            encoded = ours.input_hint_block(hint)
            if types:
                tokens = encoded.mean(dim=(2, 3)) + ours.task_embedding[control_type]
                mixed = ours.transformer_layes(tokens[:, None])[:, 0]
                encoded = encoded + ours.spatial_ch_projs(mixed)[:, :, None, None]
            plain.time_embed[2].bias.copy_(ours.time_embed[2].bias + add[0])
            plain.input_hint_block = Fixed(encoded)
            want = plain(x, hint, t, context, y)
            got = ours(x, hint, t, context, y, control_type)
            for a, b in zip((*got.output, *got.middle), (*want.output, *want.middle), strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        auto = ours(x, hint, t, context, y)
        typed = ours(x, hint, t, context, y, 3)
    assert float((auto.middle[0] - typed.middle[0]).abs().max()) > 1e-3


def test_set_union_type_reaches_the_network(loaded):
    from loom_controlnet.nodes import SetUnionControlNetType

    _, control = loaded
    typed = SetUnionControlNetType(
        control_net=control, type="canny/lineart/anime_lineart/mlsd"
    ).run(None)
    assert typed.control_type == 3 and control.control_type is None
    assert SetUnionControlNetType(control_net=typed, type="auto").run(None).control_type is None
