"""ComfyUI's word ids (``tokenize_with_weights(return_word_ids=True)``) and the per-chunk
word removal PhotoMakerEncode applies with them, against hand-built token streams. Word ids
number token groups (a weighted segment or an embedding, from 1, empty groups included),
not space-separated words. A fake encoder gives one token per non-space character."""

from __future__ import annotations

from loom_sd15.prompt import PromptTokenizer, without_word

START, END, PAD = 1, 2, 0


def _tokenizer() -> PromptTokenizer:
    return PromptTokenizer(
        encode_text=lambda text: [ord(c) for c in text if not c.isspace()],
        start_token=START,
        end_token=END,
        pad_token=PAD,
    )


def _chunk(body: list[tuple[int, float]], fill: int = PAD) -> list[tuple[int, float]]:
    row = [(START, 1.0), *body, (END, 1.0)]
    return row + [(fill, 1.0)] * (77 - len(row))


def _word(text: str, weight: float) -> list[tuple[int, float]]:
    return [(ord(c), weight) for c in text]


def test_word_ids_number_groups_not_words():
    chunks = _tokenizer().tokenize_with_word_ids("(ab) cd (ef:1.2)")
    body = [(t, w, i) for t, w, i in chunks[0] if i]
    # groups: "ab" (1.1), " cd " (plain), "ef" (1.2)
    assert body == [
        (ord("a"), 1.1, 1),
        (ord("b"), 1.1, 1),
        (ord("c"), 1.0, 2),
        (ord("d"), 1.0, 2),
        (ord("e"), 1.2, 3),
        (ord("f"), 1.2, 3),
    ]
    assert [(t, w) for t, w, _ in chunks[0]] == _tokenizer().tokenize("(ab) cd (ef:1.2)")[0]


def test_an_emphasised_prompt_loses_the_group_numbered_like_the_trigger_word():
    # "(ab) (cd) photomaker (ef:1.2)": the trigger is word 3; the groups are "ab", " ",
    # "cd", " photomaker ", "ef", so ComfyUI removes group 3, "cd", and keeps the trigger
    text = "(ab) (cd) photomaker (ef:1.2)"
    word_id = text.split(" ").index("photomaker") + 1
    [chunk] = without_word(_tokenizer().tokenize_with_word_ids(text), word_id)
    body = _word("ab", 1.1) + _word("photomaker", 1.0) + _word("ef", 1.2)
    assert chunk == _chunk(body)  # refilled with the chunk's last token (a pad)


def test_past_75_tokens_the_word_is_removed_from_its_own_chunk_only():
    # 40 emphasised 4-letter words: groups 1, 3, ..., 79 (spaces are the empty groups
    # between); the trigger is word 41, so group 41 goes: the 21st word, in chunk 2
    letters = [chr(ord("a") + k % 26) for k in range(40)]
    text = " ".join(f"({c * 4})" for c in letters) + " photomaker"
    word_id = text.split(" ").index("photomaker") + 1
    assert word_id == 41
    chunks = without_word(_tokenizer().tokenize_with_word_ids(text), word_id)
    words = [_word(c * 4, 1.1) for c in letters]
    # 18 four-token words fill a chunk (1 + 72 + 4 > 76); a word never splits (< 8 tokens)
    first = _chunk([t for w in words[:18] for t in w])
    second = _chunk([t for k, w in enumerate(words[18:36], start=18) if k != 20 for t in w])
    trigger = _word("photomaker", 1.0)
    third = _chunk([t for w in words[36:] for t in w] + trigger)
    assert chunks == [first, second, third]
    assert len(second) == 77 and second[-8:] == [(END, 1.0)] + [(PAD, 1.0)] * 7


def test_a_chunk_ending_in_its_end_token_is_refilled_with_it():
    # a 100-token word splits at the boundary: chunk 1 ends with the end token, no pads
    text = "(" + "x" * 100 + ") photomaker"
    chunks = _tokenizer().tokenize_with_word_ids(text)
    assert chunks[0][-1] == (END, 1.0, 0)
    # group 1 is the long word: the trigger is word 2, so group 2 (" photomaker") goes
    out = without_word(chunks, 2)
    assert out[0] == [(t, w) for t, w, _ in chunks[0]]
    assert out[1] == _chunk(_word("x" * 25, 1.1))
    # removing group 1 empties chunk 1 but its start and end, refilled with the end token
    out = without_word(chunks, 1)
    assert out[0] == [(START, 1.0)] + [(END, 1.0)] * 76
