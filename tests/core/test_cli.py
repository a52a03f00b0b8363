"""The `loom` command line, run in-process through its real entry point."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
from PIL import Image

from loom.cli.main import main

GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 0},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "cli/test", "images": ["2", 0]}},
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("LOOM_BASE_DIRECTORY", "LOOM_OUTPUT_DIRECTORY", "LOOM_EXTRA_MODEL_PATHS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "wf.json").write_text(json.dumps(GRAPH))
    return tmp_path


def test_run_writes_images_and_prints_their_paths(workdir, capsys):
    assert main(["run", "wf.json", "-q"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [
        str(workdir / "output/cli/test_00001_.png"),
        str(workdir / "output/cli/test_00002_.png"),
    ]
    image = Image.open(printed[0])
    assert image.size == (16, 8) and image.getpixel((0, 0)) == (255, 255, 255)
    assert json.loads(image.text["prompt"])["3"]["class_type"] == "SaveImage"


def test_set_overrides_and_output_directory_flag(workdir, capsys):
    out = workdir / "elsewhere"
    assert (
        main(
            [
                "--output-directory",
                str(out),
                "run",
                "wf.json",
                "-q",
                "--set",
                "1.width=32",
                "--set",
                "3.filename_prefix=x",
            ]
        )
        == 0
    )
    first = capsys.readouterr().out.split()[0]
    assert first == str(out / "x_00001_.png") and Image.open(first).size == (32, 8)


def test_base_directory_from_environment(workdir, capsys, monkeypatch):
    monkeypatch.setenv("LOOM_BASE_DIRECTORY", str(workdir / "base"))
    assert main(["run", "wf.json", "-q"]) == 0
    assert capsys.readouterr().out.startswith(str(workdir / "base/output/cli/"))


def test_validation_errors_name_node_and_input_and_exit_2(workdir, capsys):
    assert main(["run", "wf.json", "--set", "1.width=0"]) == 2
    err = capsys.readouterr().err
    assert "node 1 (EmptyImage): Value 0 smaller than min of 1: width" in err
    assert "Traceback" not in err
    assert not (workdir / "output").exists()


def test_execution_errors_are_one_readable_line(workdir, capsys):
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    (workdir / "bad.json").write_text(json.dumps(graph))
    assert main(["run", "bad.json"]) != 0
    err = capsys.readouterr().err
    assert "missing.png" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "content, message", [("{", "is not valid JSON"), ("[1, 2]", "expected a workflow")]
)
def test_bad_files_get_a_message(workdir, capsys, content, message):
    (workdir / "broken.json").write_text(content)
    assert main(["run", "broken.json"]) == 1
    assert message in capsys.readouterr().err


def test_bad_override_syntax(workdir, capsys):
    assert main(["run", "wf.json", "--set", "nonsense"]) != 0
    assert "NODE_ID.INPUT=VALUE" in capsys.readouterr().err


def test_validate_command(workdir, capsys):
    assert main(["validate", "wf.json"]) == 0
    assert "1 output node(s) would run: 3" in capsys.readouterr().out


def test_nodes_json_is_object_info(workdir, capsys):
    assert main(["nodes", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["EmptyImage"]["input"]["required"]["width"] == [
        "INT",
        {"default": 512, "min": 1, "max": 16384, "step": 1},
    ]
    assert info["SaveImage"]["output_node"] is True


def test_plugins_lists_builtins_and_what_they_register(workdir, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "image_io" in out and "nodes" in out and "model_folders" in out


def test_disable_plugin_flag_removes_its_nodes(workdir, capsys):
    assert main(["--disable-plugin", "mask", "nodes"]) == 0
    out = capsys.readouterr().out
    assert "InvertMask" not in out and "EmptyImage" in out


@pytest.fixture
def captured_settings(monkeypatch):
    """The Settings the CLI builds its runtime with (filled in when a command runs)."""
    import loom.runtime

    seen = {}
    original = loom.runtime.Runtime.__init__

    def spy(self, settings=None, host=None):
        seen["settings"] = settings
        original(self, settings, host)

    monkeypatch.setattr(loom.runtime.Runtime, "__init__", spy)
    return seen


def test_memory_flags_reach_the_memory_manager(workdir, captured_settings):
    from loom.memory import DtypeChoice, MemoryManager

    args = [
        "--vram-budget",
        "0.5",
        "--reserve-vram",
        "0.25",
        "--lowvram",
        "--compute-dtype",
        "bf16",
        "plugins",
    ]
    assert main(args) == 0
    settings = captured_settings["settings"]
    assert (settings.vram_budget_bytes, settings.reserved_bytes) == (512 * 1024**2, 256 * 1024**2)
    assert (settings.vram_mode, settings.compute_dtype) == ("low", DtypeChoice.BF16)
    accounting = MemoryManager.from_settings(settings).accounting()
    assert accounting.budget_bytes <= 512 * 1024**2


def test_cache_flags_choose_the_policy(workdir, captured_settings):
    assert main(["--cache", "lru", "--cache-size", "7", "run", "wf.json", "-q"]) == 0
    settings = captured_settings["settings"]
    assert (settings.cache_policy, settings.cache_size) == ("lru", 7)


def test_group_flags_work_after_the_sub_command(workdir, capsys):
    """People type `loom run wf.json --output-directory out`; ComfyUI users expect it."""
    out = workdir / "after"
    assert main(["run", "wf.json", "--output-directory", str(out), "-q", "--cache=none"]) == 0
    assert capsys.readouterr().out.split()[0] == str(out / "cli/test_00001_.png")
    assert main(["nodes", f"--base-directory={workdir / 'b'}", "--disable-plugin", "x"]) == 0
    capsys.readouterr()
    # an option the sub-command does not know is still refused by click, clearly
    assert main(["run", "wf.json", "--no-such-flag"]) != 0
    assert "No such option" in capsys.readouterr().err


def test_set_with_an_input_the_node_does_not_have_is_an_error(workdir, capsys):
    assert main(["run", "wf.json", "-q", "--set", "1.widht=32"]) != 0
    err = capsys.readouterr().err
    assert "node 1 (EmptyImage) has no input 'widht'" in err
    assert "width, height, batch_size, color" in err
    assert not (workdir / "output").exists()


def _ui_workflow(types: list[str]) -> dict:
    nodes = [
        {"id": i + 1, "type": t, "mode": 0, "inputs": [], "outputs": [], "widgets_values": []}
        for i, t in enumerate(types)
    ]
    return {"nodes": nodes, "links": [], "version": 0.4}


@pytest.mark.parametrize("form", ["api", "ui"])
def test_every_unknown_node_type_is_reported_at_once_in_both_formats(workdir, capsys, form):
    types = ["EmptyImage", "NoSuchNodeA", "LoraLoader", "NoSuchNodeB"]
    if form == "api":
        data = {str(i + 1): {"class_type": t, "inputs": {}} for i, t in enumerate(types)}
    else:
        data = _ui_workflow(types)
    (workdir / "unknown.json").write_text(json.dumps(data))
    # lora is installed but disabled here, so its node is unknown and the hint says why
    assert main(["--disable-plugin", "lora", "validate", "unknown.json"]) == 2
    err = capsys.readouterr().err
    assert "Cannot execute because nodes NoSuchNodeA, LoraLoader, NoSuchNodeB do not exist." in err
    assert "Node ID '#2', Node ID '#3', Node ID '#4'" in err
    # the hint says how to get it: enable it where installed, install it where not (core alone)
    try:
        metadata.distribution("loom-lora")
        how = "which is installed but not loaded"
    except metadata.PackageNotFoundError:
        how = "(not on PyPI yet: pip install -e plugins/lora in a Loom checkout)"
    assert "LoraLoader: provided by loom-lora" in err and how in err
    assert main(["--disable-plugin", "lora", "run", "unknown.json"]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.fixture
def allocator_calls(monkeypatch):
    """Records calls of loom.memory.allocator.configure_host_allocator (glibc left alone)."""
    import loom.memory.allocator

    calls = []
    monkeypatch.setattr(
        loom.memory.allocator, "configure_host_allocator", lambda *a: calls.append(a)
    )
    return calls


def test_building_a_runtime_leaves_malloc_alone(workdir, allocator_calls):
    from loom.runtime import Runtime
    from loom.settings import Settings

    runtime = Runtime(Settings(base_directory=workdir, tune_host_allocator=True))
    assert runtime.registry.get_node("EmptyImage") is not None
    assert allocator_calls == []


def test_the_command_line_tunes_malloc_before_building_its_runtime(workdir, allocator_calls):
    assert main(["run", "wf.json", "-q"]) == 0
    assert len(allocator_calls) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read extra model paths config"),
        ("a: [\n", "is not valid YAML: expected the node content"),
        ("- a\n- b\n", "expected sections of folder_key: path entries"),
    ],
)
def test_an_unreadable_extra_model_paths_file_is_a_message_not_a_traceback(
    workdir, capsys, content, message
):
    config = workdir / "extra_model_paths.yaml"
    if content is not None:
        config.write_text(content)
    assert main(["--extra-model-paths-config", str(config), "run", "wf.json", "-q"]) == 1
    err = capsys.readouterr().err
    assert message in err and str(config) in err
    assert "Traceback" not in err and "<unicode string>" not in err


@pytest.mark.parametrize("form", ["api", "ui"])
def test_a_misspelt_node_type_gets_a_did_you_mean_hint(workdir, capsys, form):
    types = ["EmptyImage", "Imageinvert", "NotANodeAtAll"]
    if form == "api":
        data = {str(i + 1): {"class_type": t, "inputs": {}} for i, t in enumerate(types)}
    else:
        data = _ui_workflow(types)
    (workdir / "typo.json").write_text(json.dumps(data))
    assert main(["validate", "typo.json"]) == 2
    err = capsys.readouterr().err
    assert "hint: Imageinvert: did you mean ImageInvert?; " in err
    assert "NotANodeAtAll: did you mean" not in err
    # a type nothing resembles is most likely a custom node pack's
    assert "NotANodeAtAll: not a node of Loom's plugins; if a ComfyUI custom node pack" in err
    assert "put the pack in custom_nodes/" in err


def _options_without_help(command, path="loom"):
    import click

    missing = [
        f"{path} {param.opts[0]}"
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    if not command.help:
        missing.append(f"{path} (no description)")
    for name, sub in getattr(command, "commands", {}).items():
        missing += _options_without_help(sub, f"{path} {name}")
    return missing


def test_every_option_of_every_command_says_what_it_does(workdir, capsys):
    from loom.cli.main import cli

    assert main(["--help"]) == 0  # adds core's and every installed plugin's commands
    assert "run" in cli.commands
    assert _options_without_help(cli) == []


def test_the_install_hint_for_a_missing_plugin_names_its_folder_in_this_checkout(monkeypatch):
    import re
    from pathlib import Path

    from loom import node_catalogue
    from loom.errors import install_command

    repo = Path(__file__).resolve().parents[2]
    for dist in json.loads(node_catalogue.CATALOGUE_FILE.read_text(encoding="utf-8")):
        folder = re.search(r"pip install -e (plugins/\S+) ", install_command(dist))
        pyproject = (repo / folder[1] / "pyproject.toml").read_text("utf-8")
        assert f'name = "{dist}"' in pyproject
    monkeypatch.setattr(node_catalogue, "_installed", lambda dist: False)
    hint = node_catalogue.provider_hint(["LoraLoader"])
    assert hint == (
        "LoraLoader: provided by loom-lora "
        "(not on PyPI yet: pip install -e plugins/lora in a Loom checkout)"
    )


def test_an_unknown_node_of_a_ui_workflow_names_the_pack_comfyui_recorded(workdir, capsys):
    workflow = _ui_workflow(["EmptyImage", "GetImageSizeAndCount", "SomeGitHubNode"])
    workflow["nodes"][0]["properties"] = {"cnr_id": "comfy-core", "ver": "0.8.0"}
    workflow["nodes"][1]["properties"] = {"cnr_id": "comfyui-kjnodes", "ver": "1.1.2"}
    workflow["nodes"][2]["properties"] = {"aux_id": "someone/ComfyUI-Some", "ver": "abc123"}
    (workdir / "packs.json").write_text(json.dumps(workflow))
    assert main(["validate", "packs.json"]) == 2
    err = capsys.readouterr().err
    assert "GetImageSizeAndCount: from the custom node pack comfyui-kjnodes; put it in" in err
    assert "SomeGitHubNode: from the custom node pack someone/ComfyUI-Some; put it in" in err
    assert "not a node of Loom's plugins" not in err
