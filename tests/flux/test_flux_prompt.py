"""ComfyUI's T5 prompt rules with the real T5 tokenizer: ids, padding, emphasis, overrides."""

from __future__ import annotations

import shutil

import pytest
import torch
from loom_flux.clip import FluxClip
from loom_flux.t5 import (
    T5Config,
    build_t5,
    find_tokenizer_dir,
    packaged_tokenizer_dir,
    t5_encode,
)
from loom_flux.tiny import t5_state

from loom.memory import ModelHandle


@pytest.fixture(scope="module")
def clip() -> FluxClip:
    config = T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    module = build_t5(config)
    state = t5_state(config, seed=3)
    module.load_state_dict({**state, "encoder.embed_tokens.weight": state["shared.weight"]})
    return FluxClip(ModelHandle(module.eval()), packaged_tokenizer_dir(), None)


def test_tokens_have_no_start_one_end_and_zero_padding_to_256(clip):
    row = clip.tokenize_t5("a photo of a cat")
    ids = [t for t, _ in row]
    assert ids[:8] == [3, 9, 1202, 13, 3, 9, 1712, 1]
    assert len(ids) == 256 and set(ids[8:]) == {0}


def test_emphasis_weights_tokens_and_blends_against_the_empty_prompt(clip):
    row = clip.tokenize_t5("a (cat:1.5)")
    assert [(t, w) for t, w in row[:4]] == [(3, 1.0), (9, 1.0), (1712, 1.5), (1, 1.0)]
    with torch.no_grad():
        got = clip.encode_t5("a (cat:1.5)")
        plain = t5_encode(clip.t5.module, [(t, 1.0) for t, _ in row])
        empty = t5_encode(clip.t5.module, [(1, 1.0)] + [(0, 1.0)] * 255)
    expected = plain.clone()
    expected[0, 2] = (plain[0, 2] - empty[0, 2]) * 1.5 + empty[0, 2]
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_tokenizer_folder_overrides_the_packaged_files(tmp_path):
    assert find_tokenizer_dir((tmp_path,)) == packaged_tokenizer_dir()
    shutil.copytree(packaged_tokenizer_dir(), tmp_path / "t5xxl")
    assert find_tokenizer_dir((tmp_path,)) == tmp_path / "t5xxl"
    assert (packaged_tokenizer_dir() / "NOTICE").read_text().count("Apache") >= 1
