"""T2I-Adapters: features equal diffusers' ``T2IAdapter`` at identical weights (full, full XL,
light; diffusers and original layouts), placed after each UNet level's last residual block,
and a full txt2img with an adapter through the executor."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from loom.testing import txt2img_prompt

diffusers = pytest.importorskip("diffusers")

TOLERANCE = 1e-4
KINDS = {
    "full": dict(channels=[32, 64, 128, 128], downscale_factor=8, adapter_type="full_adapter"),
    "full_xl": dict(
        channels=[32, 64, 128, 128], downscale_factor=16, adapter_type="full_adapter_xl"
    ),
    "light": dict(channels=[32, 64, 128], downscale_factor=8, adapter_type="light_adapter"),
}


def reference(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.T2IAdapter(in_channels=3, num_res_blocks=2, **KINDS[kind])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            fan_in = max(1, param[0].numel()) if param.ndim > 1 else 1
            param.normal_(0.0, min(0.2, fan_in**-0.5), generator=generator)
    return model.eval()


def save(state: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("kind", list(KINDS))
def test_features_match_diffusers_in_both_layouts(tmp_path, kind):
    from loom_controlnet.loader import AdapterModel, load_controlnet

    model = reference(kind)
    diffusers_file = save(model.state_dict(), tmp_path / "d.safetensors")
    loaded = load_controlnet(diffusers_file)
    assert isinstance(loaded, AdapterModel) and loaded.config.kind == kind
    original_file = save(loaded.module.state_dict(), tmp_path / "o.safetensors")
    again = load_controlnet(original_file)
    assert again.config == loaded.config
    hint = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(hint)
        for ours in (loaded.module(hint), again.module(hint)):
            assert len(ours) == len(expected) == 4
            assert (
                max(float((a - b).abs().max()) for a, b in zip(ours, expected, strict=True))
                <= TOLERANCE
            )


def test_features_go_after_each_levels_last_res_block(tmp_path):
    from loom_controlnet.adapter_signal import AdapterSignal
    from loom_controlnet.loader import load_controlnet

    from loom.model_sampling import DiscreteEps

    adapter = load_controlnet(save(reference("full").state_dict(), tmp_path / "a.safetensors"))
    signal = AdapterSignal(adapter, torch.rand(1, 3, 64, 64), strength=0.5)
    sd15 = SimpleNamespace(model_sampling=DiscreteEps(), config=SimpleNamespace(num_res_blocks=2))
    out = signal.residuals(torch.zeros(2, 4, 8, 8), torch.ones(2), {}, sd15, 2)
    placed = [i for i, r in enumerate(out.input) if r is not None]
    assert placed == [2, 5, 8, 11] and out.middle == () and out.output == ()  # SD1.5's blocks
    with torch.no_grad():
        features = adapter.module(torch.nn.functional.interpolate(signal.hint, size=(64, 64)))
    assert torch.allclose(out.input[5], features[1] * 0.5)
    xl = load_controlnet(save(reference("full_xl").state_dict(), tmp_path / "xl.safetensors"))
    out = AdapterSignal(xl, torch.rand(1, 3, 64, 64)).residuals(
        torch.zeros(1, 4, 8, 8), torch.ones(1), {}, sd15, 1
    )
    assert [i for i, r in enumerate(out.input) if r is not None] == [3, 5, 8]
    assert len(out.middle) == 1


def test_txt2img_with_an_adapter(tmp_path, demo_tokenizers):
    """Through the executor: an adapter shaped for the tiny SD1.5 UNet (two levels, 32/64
    channels) changes the image, deterministically."""
    import copy

    import numpy as np
    from loom_sd15.tiny import write_tiny_checkpoint
    from PIL import Image

    from loom.executor.executor import Executor
    from loom.settings import Settings
    from loom.testing import make_runtime

    torch.manual_seed(0)
    model = diffusers.T2IAdapter(
        in_channels=3, channels=[32, 64], num_res_blocks=2, downscale_factor=8
    )
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    write_tiny_checkpoint(tmp_path / "models" / "checkpoints" / "tiny.safetensors")
    (tmp_path / "models" / "controlnet").mkdir()
    save(model.state_dict(), tmp_path / "models" / "controlnet" / "t2i.safetensors")
    (tmp_path / "input").mkdir()
    pixels = np.random.default_rng(5).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "hint.png")
    (tmp_path / "paths.yaml").write_text(f"shared:\n  tokenizers: {demo_tokenizers}\n")
    runtime = make_runtime(
        "sd15",
        "samplers",
        "controlnet",
        settings=Settings(
            base_directory=tmp_path,
            load_custom_nodes=False,
            cpu_only=True,
            extra_model_paths=[tmp_path / "paths.yaml"],
        ),
    )
    prompt = txt2img_prompt(
        "tiny.safetensors",
        positive="a bottle",
        negative="",
        width=32,
        height=32,
        seed=1,
        steps=2,
        cfg=5.0,
    )
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "hint.png"}}
    prompt["11"] = {
        "class_type": "ControlNetLoader",
        "inputs": {"control_net_name": "t2i.safetensors"},
    }
    prompt["12"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {
            "positive": ["6", 0],
            "negative": ["7", 0],
            "control_net": ["11", 0],
            "image": ["10", 0],
            "strength": 1.0,
            "start_percent": 0.0,
            "end_percent": 1.0,
        },
    }
    prompt["3"]["inputs"]["positive"] = ["12", 0]
    prompt["3"]["inputs"]["negative"] = ["12", 1]

    def render(p: dict) -> torch.Tensor:
        executor = Executor(runtime)
        validated = executor.validate(copy.deepcopy(p))
        result = executor.execute("t", validated.prompt, validated.outputs, {})
        assert result.error is None, result.error.get("exception_message")
        return result.values["8"][0][0]

    controlled = render(prompt)
    assert torch.equal(controlled, render(prompt))
    plain = copy.deepcopy(prompt)
    plain["3"]["inputs"]["positive"], plain["3"]["inputs"]["negative"] = ["6", 0], ["7", 0]
    assert float((render(plain) - controlled).abs().max()) > 1e-3
