"""Prompt parsing, tokenizing, chunking, weighting and embeddings, as ComfyUI's sd1_clip."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.prompt import parse_prompt
from sd15_markers import CLIP_L, needs_tokenizer

START, END = 49406, 49407


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a photo", [("a photo", 1.0)]),
        ("a (cat:1.2) dog", [("a ", 1.0), ("cat", 1.2), (" dog", 1.0)]),
        ("(cat)", [("cat", 1.1)]),
        ("((cat))", [("cat", 1.1 * 1.1)]),
        ("(a (b:1.5) c:0.8)", [("a ", 0.8), ("b", 1.5), (" c", 0.8)]),
        ("(a:b)", [("a:b", 1.1)]),  # not a number after the colon: plain emphasis
        ("\\(cat\\) x", [("(cat) x", 1.0)]),  # escaped brackets are literal
        ("(\\(cat\\):1.3)", [("(cat)", 1.3)]),
        ("[cat]", [("[cat]", 1.0)]),  # ComfyUI gives square brackets no meaning
        ("(cat", [("(cat", 1.0)]),  # unbalanced: literal
        ("", []),
    ],
)
def test_emphasis_parsing_matches_comfyui(text, expected):
    got = parse_prompt(text)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


@pytest.fixture(scope="module")
def clip(tiny_checkpoint, tmp_path_factory):
    from loom_sd15.family import SD15Family
    from safetensors.torch import save_file

    from loom.safetensors_header import read_header
    from loom.types import LoadRequest, ModelPart

    embeddings = tmp_path_factory.mktemp("embeddings")
    generator = torch.Generator().manual_seed(9)
    save_file(
        {"emb_params": torch.randn(2, 32, generator=generator)},
        str(embeddings / "mystyle.safetensors"),
    )
    save_file(
        {
            "clip_l": torch.randn(1, 32, generator=generator),
            "clip_g": torch.randn(1, 1280, generator=generator),
        },
        str(embeddings / "dual.safetensors"),
    )
    header = read_header(tiny_checkpoint)
    return (
        SD15Family()
        .load(
            header,
            ModelPart.CHECKPOINT,
            LoadRequest(tokenizer_dir=CLIP_L, embedding_dirs=(embeddings,)),
        )
        .clip
    )


@needs_tokenizer
def test_tokens_are_clip_l_ids_padded_with_end(clip):
    chunks = clip.tokenize("a photo of a cat")
    assert len(chunks) == 1 and len(chunks[0]) == 77
    assert [t for t, _ in chunks[0][:7]] == [START, 320, 1125, 539, 320, 2368, END]
    assert all(t == END for t, _ in chunks[0][7:])


@needs_tokenizer
def test_long_prompts_split_into_77_token_chunks(clip):
    chunks = clip.tokenize("cat " * 74 + "(big dog:1.1)")
    assert [len(c) for c in chunks] == [77, 77]
    # the 74-token segment fills chunk 0; the 2-token group does not fit and moves whole
    assert [t for t, _ in chunks[0][:2]] == [START, 2368] and chunks[0][75][0] == END
    assert [(t, w) for t, w in chunks[1][1:3]] == [(1205, 1.1), (1929, 1.1)]
    cond = clip.encode("cat " * 74 + "(big dog:1.1)")[0][0]
    assert cond.shape == (1, 154, 32)


@needs_tokenizer
def test_a_long_segment_is_split_at_the_chunk_boundary(clip):
    chunks = clip.tokenize("cat " * 100)
    assert [len(c) for c in chunks] == [77, 77]
    assert sum(1 for c in chunks for t, _ in c if t == 2368) == 100
    assert chunks[0][-1][0] == END and chunks[1][0][0] == START


@needs_tokenizer
def test_weights_follow_comfyui_formula(clip):
    from loom_sd15.clip import encode_tokens

    chunks = clip.tokenize("a (cat:1.5)")
    weights = [w for _, w in chunks[0]]
    assert weights[2] == 1.5 and weights.count(1.0) == 76
    cond = clip.encode("a (cat:1.5)")[0][0]
    clip._prepare()
    rows = [[t for t, _ in chunks[0]], [START, END] + [END] * 75]
    z, _ = encode_tokens(clip.handle.module, rows, None, END)
    expected = z[0].clone()
    expected[2] = (z[0][2] - z[1][2]) * 1.5 + z[1][2]
    assert torch.allclose(cond[0], expected, atol=1e-6)
    plain = clip.encode("a cat")[0][0]
    assert torch.equal(cond[0, :2], plain[0, :2])  # unweighted tokens are untouched
    assert not torch.equal(cond[0, 2], plain[0, 2])


@needs_tokenizer
def test_clip_skip(clip):
    last = clip.encode("a cat")[0][0]
    skipped = clip.clone()
    skipped.set_last_layer(-2)
    assert not torch.equal(skipped.encode("a cat")[0][0], last)
    assert torch.equal(clip.encode("a cat")[0][0], last)  # the clone did not change the original
    beyond = clip.clone()
    beyond.set_last_layer(-24)  # beyond the depth: ComfyUI falls back to the last layer
    assert torch.equal(beyond.encode("a cat")[0][0], last)


@needs_tokenizer
def test_textual_inversion_embeddings(clip, caplog):
    chunks = clip.tokenize("a photo of embedding:mystyle, cat")
    tensors = [t for t, _ in chunks[0] if isinstance(t, torch.Tensor)]
    assert len(tensors) == 2 and tensors[0].shape == (32,)
    # the leftover after the name (", cat") is tokenized: "," and "cat"
    ids = [t for t, _ in chunks[0] if not isinstance(t, torch.Tensor)]
    assert ids[:4] == [START, 320, 1125, 539] and ids[4:6] == [267, 2368]
    assert clip.encode("embedding:mystyle")[0][0].shape == (1, 77, 32)
    dual = [t for t, _ in clip.tokenize("embedding:dual")[0] if isinstance(t, torch.Tensor)]
    assert len(dual) == 1  # the clip_l entry of a multi-encoder embedding
    clip.tokenize("embedding:missing cat, with a long rest of the prompt")
    # the warning names the embedding, not the rest of the prompt
    assert "embedding:missing does not exist, ignoring" in caplog.text
    assert "long rest" not in caplog.text


@needs_tokenizer
def test_an_embedding_vector_acts_like_the_token_it_copies(clip):
    from loom_sd15.clip import encode_tokens

    clip._prepare()
    module = clip.handle.module
    row = [START, 320, 2368, END] + [END] * 73
    vector = module.get_input_embeddings().weight[2368].detach().float().clone()
    with_vector = [START, 320, vector, END] + [END] * 73
    a, _ = encode_tokens(module, [row], None, END)
    b, _ = encode_tokens(module, [with_vector], None, END)
    assert torch.allclose(a, b, atol=1e-6)
