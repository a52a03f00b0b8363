"""Model folders: ComfyUI's layout, extra_model_paths.yaml, confinement."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.folders import STANDARD_KINDS, ExtraPathsError, ModelFolders, read_extra_model_paths

KINDS = {kind.key: kind for kind in STANDARD_KINDS}


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_standard_layout_aliases_and_recursive_listing(tmp_path):
    touch(tmp_path / "models/checkpoints/b.safetensors")
    touch(tmp_path / "models/checkpoints/sub/a.safetensors")
    touch(tmp_path / "models/checkpoints/notes.txt")
    touch(tmp_path / "models/clip/te.safetensors")
    touch(tmp_path / "models/unet/u.sft")
    folders = ModelFolders(tmp_path / "models", tmp_path / "output", KINDS)
    assert folders.filenames("checkpoints") == ["b.safetensors", "sub/a.safetensors"]
    assert folders.filenames("text_encoders") == folders.filenames("clip") == ["te.safetensors"]
    assert folders.filenames("diffusion_models") == ["u.sft"]
    assert (
        folders.find("checkpoints", "sub/a.safetensors")
        == tmp_path / "models/checkpoints/sub/a.safetensors"
    )
    with pytest.raises(KeyError):
        folders.paths("nonsense")


def test_require_gives_the_file_or_comfyuis_message_with_the_folders_searched(tmp_path):
    from loom.errors import ModelFileError

    touch(tmp_path / "models/controlnet/c.safetensors")
    folders = ModelFolders(tmp_path / "models", tmp_path / "output", KINDS)
    assert folders.require("controlnet", "c.safetensors") == folders.find(
        "controlnet", "c.safetensors"
    )
    with pytest.raises(ModelFileError) as raised:
        folders.require("controlnet", "../secret.safetensors")
    assert raised.value.message == (
        "Model in folder 'controlnet' with filename '../secret.safetensors' not found."
    )
    assert str(tmp_path / "models" / "controlnet") in raised.value.hint


@pytest.mark.parametrize(
    "name", ["../secret.safetensors", "/etc/passwd", "a\x00.safetensors", "sub/../../x"]
)
def test_find_refuses_escapes(tmp_path, name):
    touch(tmp_path / "models/secret.safetensors")
    folders = ModelFolders(tmp_path / "models", tmp_path / "output", KINDS)
    assert folders.find("checkpoints", name) is None


def test_model_files_linked_from_another_disk_are_listed_and_found(tmp_path):
    """ComfyUI follows links in model folders; listing and finding use one rule."""
    touch(tmp_path / "other_disk/x.safetensors")
    touch(tmp_path / "other_disk/shared/y.safetensors")
    checkpoints = tmp_path / "models/checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "link.safetensors").symlink_to(tmp_path / "other_disk/x.safetensors")
    (checkpoints / "shared").symlink_to(tmp_path / "other_disk/shared")
    (checkpoints / "dangling.safetensors").symlink_to(tmp_path / "nowhere.safetensors")
    (checkpoints / "loop").symlink_to(checkpoints)  # a link cycle must not hang the listing
    folders = ModelFolders(tmp_path / "models", tmp_path / "output", KINDS)
    listed = folders.filenames("checkpoints")
    assert listed == ["link.safetensors", "shared/y.safetensors"]
    for name in listed:
        found = folders.find("checkpoints", name)
        assert found is not None and found.read_bytes() == b"x"
    assert folders.find("checkpoints", "dangling.safetensors") is None
    # the name itself still cannot leave the folder, link or not
    assert folders.find("checkpoints", "shared/../../secret.safetensors") is None


def test_extra_model_paths_yaml_comfyui_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARED_MODELS", str(tmp_path / "shared"))
    touch(tmp_path / "a1111/models/Stable-diffusion/sd.safetensors")
    touch(tmp_path / "shared/loras/l1.safetensors")
    touch(tmp_path / "shared/loras2/l2.safetensors")
    touch(tmp_path / "models/loras/local.safetensors")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(
        "a111:\n"
        "    base_path: a1111\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    clip: models/text_encoder\n"
        "comfyui:\n"
        "    base_path: $SHARED_MODELS\n"
        "    is_default: true\n"
        "    loras: |\n"
        "        loras\n"
        "        loras2\n"
        "    custom_nodes: nodes\n"
    )
    extra = read_extra_model_paths(config)
    assert extra.other["text_encoders"] == [tmp_path / "a1111/models/text_encoder"]
    folders = ModelFolders.from_configs(tmp_path / "models", tmp_path / "output", KINDS, [config])
    assert folders.filenames("checkpoints") == ["sd.safetensors"]
    assert folders.paths("loras")[:2] == [
        tmp_path / "shared/loras",
        tmp_path / "shared/loras2",
    ]  # is_default first
    assert folders.filenames("loras") == ["l1.safetensors", "l2.safetensors", "local.safetensors"]
    assert folders.custom_nodes_paths == [tmp_path / "shared/nodes"]


def test_broken_extra_paths_file_names_the_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("a: [unclosed\n")
    with pytest.raises(ExtraPathsError, match=r"bad\.yaml"):
        read_extra_model_paths(config)


def test_one_confinement_rule_refuses_symlinks_out_but_accepts_a_symlinked_base(tmp_path):
    from loom.paths import PathOutsideError, confine, is_inside

    touch(tmp_path / "outside/secret.png")
    real = tmp_path / "real_input"
    touch(real / "ok.png")
    (real / "link.png").symlink_to(tmp_path / "outside/secret.png")
    (tmp_path / "input").symlink_to(real)  # the folder itself may be a symlink
    assert confine(tmp_path / "input", "ok.png") == tmp_path / "input/ok.png"
    assert not is_inside(tmp_path / "input", "link.png")
    for name in ("../outside/secret.png", "/etc/passwd", "a\x00b"):
        with pytest.raises(PathOutsideError):
            confine(tmp_path / "input", name)
