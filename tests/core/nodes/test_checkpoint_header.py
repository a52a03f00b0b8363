"""loom.safetensors_header (header reading) and loom.family_detection (who owns a file)."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import safetensors.torch
import torch
from loom_toy_family import ToyFamily, make_registry, write_model

from loom.errors import ModelFileError, UnknownCheckpointError
from loom.family_detection import detect_common_family, detect_family
from loom.safetensors_header import read_header
from loom.types import TensorInfo


def _raw_file(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_reads_tensors_and_metadata_without_loading(tmp_path):
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file(
        {
            "a.weight": torch.zeros(2, 3, dtype=torch.float16),
            "b": torch.zeros(5, dtype=torch.bfloat16),
            "c": torch.zeros((), dtype=torch.int64),
        },
        str(path),
        metadata={"format": "pt"},
    )
    header = read_header(path)
    assert header.path == path
    assert header.tensors == {
        "a.weight": TensorInfo("F16", (2, 3)),
        "b": TensorInfo("BF16", (5,)),
        "c": TensorInfo("I64", ()),
    }
    assert header.metadata == {"format": "pt"}
    assert header.has("a.weight", "b") and not header.has("zzz")
    assert header.keys_with_prefix("a.") == ["a.weight"]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ModelFileError, match=r"model file not found: .*nope\.safetensors"):
        read_header(tmp_path / "nope.safetensors")


class _Boom:
    """Unpickling this would create a marker file: proves the loader never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_checkpoint_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    zip_ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "boom": _Boom(marker)}, zip_ckpt)
    with pytest.raises(ModelFileError) as info:
        read_header(zip_ckpt)
    message = str(info.value)
    assert "old.ckpt is not a safetensors file" in message
    assert "only loads .safetensors" in message and "never unpickles" in message
    assert info.value.hint is not None and "convert" in info.value.hint

    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(_Boom(marker), protocol=2))
    with pytest.raises(
        ModelFileError,
        match=r"legacy\.pt is not a safetensors file \(it looks like a Python pickle\)",
    ):
        read_header(legacy)
    assert not marker.exists()


def test_other_non_safetensors_files(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(
        ModelFileError, match=r"empty\.safetensors is not a safetensors file: it is only 0 bytes"
    ):
        read_header(empty)
    text = tmp_path / "readme.safetensors"
    text.write_text("this is just some text, not a model at all\n" * 3)
    with pytest.raises(ModelFileError, match=r"readme\.safetensors is not a safetensors file"):
        read_header(text)
    with pytest.raises(ModelFileError, match="is a directory"):
        read_header(tmp_path)


def test_truncated_data_section(tmp_path):
    path = tmp_path / "cut.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(64)}, str(path))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(
        ModelFileError,
        match=r"cut\.safetensors is truncated: tensor 'w' ends at byte 256 .* only 246 bytes",
    ):
        read_header(path)


def test_truncated_inside_the_header(tmp_path):
    path = tmp_path / "cut.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(64)}, str(path))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(
        ModelFileError,
        match=r"cut\.safetensors is truncated: its header says \d+ bytes but the file holds only 12",
    ):
        read_header(path)


def test_corrupt_json(tmp_path):
    path = _raw_file(tmp_path / "bad.safetensors", b'{"w": {"dtype": "F32", "sha')
    with pytest.raises(
        ModelFileError, match=r"bad\.safetensors has a corrupt safetensors header \(not valid JSON"
    ):
        read_header(path)
    path = _raw_file(tmp_path / "list.safetensors", b"[1, 2, 3]")
    with pytest.raises(ModelFileError, match="expected a JSON object"):
        read_header(path)


def test_unknown_dtype(tmp_path):
    header = {"w": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}
    path = _raw_file(tmp_path / "odd.safetensors", header, b"\0" * 8)
    with pytest.raises(
        ModelFileError, match=r"odd\.safetensors: tensor 'w' has unknown dtype 'F7'"
    ):
        read_header(path)


def test_inconsistent_entries(tmp_path):
    size = {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    with pytest.raises(ModelFileError, match=r"has 8 bytes of data but F32\[3\] needs 12"):
        read_header(_raw_file(tmp_path / "a.safetensors", size, b"\0" * 8))
    offsets = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}
    with pytest.raises(ModelFileError, match="corrupt data offsets"):
        read_header(_raw_file(tmp_path / "b.safetensors", offsets, b"\0" * 8))
    shape = {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}
    with pytest.raises(ModelFileError, match="corrupt shape"):
        read_header(_raw_file(tmp_path / "c.safetensors", shape, b"\0" * 4))


# --- family detection ------------------------------------------------------------------


def test_highest_score_wins_and_ties_go_to_the_first(tmp_path):
    low, high, same = (
        ToyFamily("low", score=0.5),
        ToyFamily("high", score=2.0),
        ToyFamily("same", score=2.0),
    )
    registry = make_registry(low, high, same)
    header = read_header(write_model(tmp_path / "m.safetensors"))
    assert detect_family(registry, header, "checkpoint") is high


def test_a_family_that_raises_is_skipped(tmp_path, caplog):
    class Broken(ToyFamily):
        def detect(self, header, part):
            raise RuntimeError("bug in plugin")

    good = ToyFamily("good")
    registry = make_registry(Broken("broken", score=9.0), good)
    header = read_header(write_model(tmp_path / "m.safetensors"))
    assert detect_family(registry, header, "vae") is good
    assert "model family broken failed to inspect m.safetensors" in caplog.text


def test_unknown_checkpoint_lists_installed_families(tmp_path):
    registry = make_registry(ToyFamily("alpha", prefix="a."), ToyFamily("beta", prefix="b."))
    header = read_header(write_model(tmp_path / "mystery.safetensors", prefix="z."))
    with pytest.raises(UnknownCheckpointError) as info:
        detect_family(registry, header, "text_encoder")
    assert info.value.message == (
        "no installed plugin recognises mystery.safetensors as a text encoder; "
        "installed model families: alpha, beta"
    )
    assert info.value.hint is None


def test_unknown_checkpoint_without_families_hints_at_a_plugin(tmp_path):
    registry = make_registry()
    header = read_header(write_model(tmp_path / "x.safetensors"))
    with pytest.raises(
        UnknownCheckpointError, match="as a checkpoint; installed model families: none"
    ) as info:
        detect_family(registry, header, "checkpoint")
    assert "pip install -e plugins/sd15 in a Loom checkout" in str(info.value)


def test_common_family_must_recognise_every_file(tmp_path):
    # "both" knows the a. and b. files; "solo" knows only a. files, but scores higher there.
    class Both(ToyFamily):
        def detect(self, header, part):
            return 1.0 if header.keys_with_prefix("a.") or header.keys_with_prefix("b.") else 0.0

    solo, both = ToyFamily("solo", prefix="a.", score=5.0), Both("both")
    registry = make_registry(solo, both)
    first = read_header(write_model(tmp_path / "one.safetensors", prefix="a.", parts=("clip",)))
    second = read_header(write_model(tmp_path / "two.safetensors", prefix="b.", parts=("clip",)))
    assert detect_family(registry, first, "text_encoder") is solo
    assert detect_common_family(registry, [first, second], "text_encoder") is both
    with pytest.raises(
        UnknownCheckpointError, match=r"recognises one\.safetensors \+ two\.safetensors"
    ):
        detect_common_family(make_registry(solo), [first, second], "text_encoder")
