"""Safetensors loading onto meta-built modules, errors for bad files, prefix views."""

from __future__ import annotations

import json
import logging
import struct

import pytest
import torch
from memory_helpers import TinyNet, make_input, make_net
from safetensors.torch import save_file

from loom.errors import ModelFileError
from loom.memory import (
    LoadPolicy,
    build_on_meta,
    configure_host_allocator,
    load_into_module,
    load_module,
    open_safetensors,
    read_header,
    split_state_dict_by_prefix,
)


def save(net: torch.nn.Module, path, prefix: str = "") -> None:
    save_file({prefix + k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn]
)
def test_load_real_file_onto_meta_module(tmp_path, dtype):
    reference = make_net(dtype=dtype) if dtype != torch.float8_e4m3fn else make_net().to(dtype)
    save(reference, tmp_path / "net.safetensors")
    net, report = load_module(TinyNet, tmp_path / "net.safetensors")
    assert report.missing == report.unexpected == report.left_on_meta == ()
    for (name, loaded), original in zip(
        net.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert loaded.dtype == dtype and not loaded.is_meta, name
        assert torch.equal(loaded.view(torch.uint8), original.view(torch.uint8)), name
    assert not any(p.requires_grad for p in net.parameters())
    assert torch.allclose(net(make_input()), reference.to(torch.float32)(make_input()), atol=1e-6)


def test_tensors_are_views_of_the_mapped_file(tmp_path):
    save(make_net(), tmp_path / "net.safetensors")
    sd = open_safetensors(tmp_path / "net.safetensors")
    a, b = sd["conv.weight"], sd["out.weight"]
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()  # one mapping
    net = build_on_meta(TinyNet)
    assert net.conv.weight.is_meta
    load_into_module(net, sd)
    assert net.out.weight.untyped_storage().data_ptr() == a.untyped_storage().data_ptr()


def test_header_without_reading_tensors(tmp_path):
    save(make_net(dtype=torch.float16), tmp_path / "net.safetensors")
    header = read_header(tmp_path / "net.safetensors")
    assert header.tensors["conv.weight"].dtype == "F16"
    assert header.tensors["conv.weight"].shape == (16, 4, 3, 3)


def test_truncated_file(tmp_path):
    path = tmp_path / "net.safetensors"
    save(make_net(), path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(ModelFileError, match="truncated"):
        open_safetensors(path)
    path.write_bytes(data[:20])
    with pytest.raises(ModelFileError, match="truncated"):
        open_safetensors(path)
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="truncated"):
        open_safetensors(path)


def _raw_file(path, header: dict, data: bytes = b"") -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_corrupt_files(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"PK\x03\x04 this is a zip/pickle checkpoint, not safetensors" * 4)
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        open_safetensors(path)
    path.write_bytes(struct.pack("<Q", 10) + b"{not json!" + b"\0" * 8)
    with pytest.raises(ModelFileError, match="corrupt"):
        open_safetensors(path)
    _raw_file(path, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(ModelFileError, match="needs 16 bytes"):
        open_safetensors(path)
    _raw_file(path, {"w": {"dtype": "F32", "shape": "x", "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(ModelFileError, match="corrupt shape"):
        open_safetensors(path)


def test_unsupported_dtype(tmp_path):
    path = tmp_path / "odd.safetensors"
    _raw_file(path, {"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, b"\0")
    with pytest.raises(ModelFileError, match="dtype 'F4'") as info:
        open_safetensors(path)
    assert "supported dtypes" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        open_safetensors(tmp_path / "nope.safetensors")


def test_missing_and_unexpected_keys_by_policy(tmp_path, caplog):
    sd = dict(make_net().state_dict())
    del sd["out.bias"]
    sd["extra.weight"] = torch.zeros(2)
    with pytest.raises(ModelFileError, match=r"1 missing keys: out\.bias"):
        load_into_module(build_on_meta(TinyNet), sd)
    with pytest.raises(ModelFileError, match=r"unexpected keys: extra\.weight"):
        load_into_module(build_on_meta(TinyNet), sd, LoadPolicy(missing="warn", unexpected="error"))
    with caplog.at_level(logging.WARNING, logger="loom.memory.loading"):
        net = build_on_meta(TinyNet)
        report = load_into_module(net, sd, LoadPolicy(missing="warn"))
    assert report.missing == ("out.bias",) and report.unexpected == ("extra.weight",)
    assert torch.equal(net.out.bias, torch.zeros(4)) and "missing" in caplog.text


def test_shape_mismatch_is_an_error():
    sd = dict(make_net().state_dict())
    sd["out.weight"] = torch.zeros(3, 16)
    with pytest.raises(ModelFileError, match="shape"):
        load_into_module(build_on_meta(TinyNet), sd)


def test_policy_dtype_converts_storage(tmp_path):
    save(make_net(), tmp_path / "net.safetensors")
    net, _ = load_module(TinyNet, tmp_path / "net.safetensors", LoadPolicy(dtype=torch.bfloat16))
    assert {p.dtype for p in net.parameters()} == {torch.bfloat16}


class CountingDict(dict):
    reads = 0

    def __getitem__(self, key):
        type(self).reads += 1
        return super().__getitem__(key)


def test_split_by_prefix_is_lazy(tmp_path):
    unet, vae = make_net(0), make_net(1, width=8)
    save(unet, tmp_path / "a.safetensors", "model.diffusion_model.")
    sd = CountingDict(
        {
            **open_safetensors(tmp_path / "a.safetensors"),
            "first_stage_model.conv.weight": torch.ones(1),
            "model.other": torch.ones(1),
        }
    )
    CountingDict.reads = 0
    parts = split_state_dict_by_prefix(
        sd, ["model.", "model.diffusion_model.", "first_stage_model."]
    )
    assert CountingDict.reads == 0
    assert set(parts["model.diffusion_model."]) == set(unet.state_dict())
    assert list(parts["model."]) == ["other"] and list(parts[""]) == []
    assert list(parts["first_stage_model."]) == ["conv.weight"]
    net = build_on_meta(TinyNet)
    load_into_module(net, parts["model.diffusion_model."])
    assert CountingDict.reads == len(unet.state_dict())
    assert torch.equal(net(make_input()), unet(make_input()))
    del vae


def test_configure_host_allocator_is_safe_to_call():
    result = configure_host_allocator()
    if result.libc is not None:
        assert result.applied and not result.failed
