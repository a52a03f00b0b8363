"""FreSca: the pre-CFG rescaling of the guidance's spectrum against a hand computation with
numpy's FFT, the cfg-1 case left alone, the node on a clone and /object_info."""

from __future__ import annotations

import copy

import numpy as np
import torch
from loom_samplers.fresca import FrequencyScaledGuidance, FreSca, frequency_scaled

from loom.samplers import PreCFGStep, guidance_hooks_of


def by_hand(x: np.ndarray, low: float, high: float, cutoff: int) -> np.ndarray:
    spectrum = np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))
    mask = np.full(x.shape, high)
    h, w = x.shape[-2:]
    ch, cw = min(cutoff, h // 2), min(cutoff, w // 2)
    mask[..., h // 2 - ch : h // 2 + ch, w // 2 - cw : w // 2 + cw] = low
    return np.fft.ifft2(np.fft.ifftshift(spectrum * mask, axes=(-2, -1))).real


def test_spectrum_scaling_is_comfyuis_rule():
    x = torch.randn(2, 4, 12, 10, generator=torch.Generator().manual_seed(0))
    for cutoff in (1, 3, 20):  # 20: more than half a side, the whole spectrum is "low"
        out = frequency_scaled(x, 0.5, 1.75, cutoff)
        expected = by_hand(x.double().numpy(), 0.5, 1.75, cutoff)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(frequency_scaled(x, 2.0, 2.0, 3), x * 2.0, rtol=1e-5, atol=1e-5)


def test_pre_cfg_function_rescales_the_guidance_only():
    gen = torch.Generator().manual_seed(1)
    x, cond, uncond = (torch.randn(1, 4, 8, 8, generator=gen) for _ in range(3))
    step = PreCFGStep(x, torch.tensor([1.0]), (cond, uncond), 7.0, None, (True, True))
    new_cond, same_uncond = FrequencyScaledGuidance(1.0, 1.25, 2)(step)
    assert same_uncond is uncond
    guidance = by_hand((cond - uncond).double().numpy(), 1.0, 1.25, 2)
    np.testing.assert_allclose(new_cond.numpy(), guidance + uncond.numpy(), rtol=1e-4, atol=1e-5)
    skipped = PreCFGStep(x, torch.tensor([1.0]), (cond, uncond), 1.0, None, (True, False))
    assert FrequencyScaledGuidance(1.0, 1.25, 2)(skipped) == (cond, uncond)


def test_node_adds_the_pre_cfg_function_to_a_clone():
    class Model:
        def clone(self):
            return copy.copy(self)

    model = Model()
    patched = FreSca(model=model, scale_low=0.9, scale_high=1.1, freq_cutoff=5).run(None)
    assert guidance_hooks_of(model).pre_cfg == ()
    assert guidance_hooks_of(patched).pre_cfg == (FrequencyScaledGuidance(0.9, 1.1, 5),)


def test_object_info_is_comfyuis(samplers_registry):
    from loom.nodes.object_info import to_json

    entry = to_json(samplers_registry.get_node("FreSca"), samplers_registry)
    assert entry["input"]["required"] == {
        "model": ["MODEL", {}],
        "scale_low": [
            "FLOAT",
            {
                "default": 1.0,
                "min": 0,
                "max": 10,
                "step": 0.01,
                "tooltip": "Scaling factor for low-frequency components",
            },
        ],
        "scale_high": [
            "FLOAT",
            {
                "default": 1.25,
                "min": 0,
                "max": 10,
                "step": 0.01,
                "tooltip": "Scaling factor for high-frequency components",
            },
        ],
        "freq_cutoff": [
            "INT",
            {
                "default": 20,
                "min": 1,
                "max": 10000,
                "step": 1,
                "tooltip": "Number of frequency indices around center to consider as low-frequency",
            },
        ],
    }
    assert (entry["output"], entry["category"]) == (["MODEL"], "_for_testing")
    assert entry["description"] == "Applies frequency-dependent scaling to the guidance"
    assert entry["experimental"] is True and entry["display_name"] == "FreSca"
    assert entry["python_module"] == "comfy_extras.nodes_fresca"
