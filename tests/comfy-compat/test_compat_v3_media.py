"""A V3 pack handling video, audio and meshes through ``comfy_api.latest``'s ``Input`` /
``InputImpl`` / ``Types`` and ``ui.PreviewVideo`` / ``PreviewAudio`` / ``PreviewUI3D``:
it imports and registers; what needs no codec runs and shows ComfyUI's UI messages; what
needs one (writing audio or a video file) fails when run, naming the node."""

from __future__ import annotations

import json
import sys

import pytest
from compat_helpers import empty_image
from PIL import Image

PACK = """
import os
from fractions import Fraction

import folder_paths
import torch

from comfy_api.input import VideoInput  # the older import paths
from comfy_api.input_impl.video_types import VideoFromFile
from comfy_api.latest import ComfyExtension, Input, InputImpl, Types, io, ui
from comfy_api.util.video_types import VideoContainer


class MakeVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MediaMakeVideo",
            inputs=[io.Image.Input("images"), io.Float.Input("fps", default=8.0)],
            outputs=[io.Video.Output()],
        )

    @classmethod
    def execute(cls, images, fps):
        parts = Types.VideoComponents(images=images, frame_rate=Fraction(fps))
        return io.NodeOutput(InputImpl.VideoFromComponents(parts))


class VideoInfo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MediaVideoInfo",
            inputs=[io.Video.Input("video")],
            outputs=[io.Int.Output("width"), io.Int.Output("height"), io.Float.Output("seconds")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, video):
        assert isinstance(video, Input.Video) and isinstance(video, VideoInput)
        assert isinstance(video, io.Video.Type)
        width, height = video.get_dimensions()
        seconds = video.get_duration()
        text = f"{width}x{height}, {video.get_frame_count()} frames, {seconds}s"
        return io.NodeOutput(width, height, seconds, ui=ui.PreviewText(text))


class SaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MediaSaveVideo",
            inputs=[
                io.Video.Input("video"),
                io.Combo.Input("format", options=Types.VideoContainer.as_input()),
                io.Combo.Input("codec", options=Types.VideoCodec.as_input()),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, video, format, codec):
        name = "clip." + VideoContainer.get_extension(format)
        os.makedirs(folder_paths.get_output_directory(), exist_ok=True)
        path = os.path.join(folder_paths.get_output_directory(), name)
        video.save_to(path, format=Types.VideoContainer(format), codec=codec)
        saved = ui.SavedResult(name, "", io.FolderType.output)
        assert (saved.filename, saved.type) == (name, io.FolderType.output)
        return io.NodeOutput(ui=ui.PreviewVideo([saved]))


class LoadClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MediaLoadClip",
            inputs=[io.String.Input("file", default="in.mp4")],
            outputs=[io.Video.Output()],
        )

    @classmethod
    def execute(cls, file):
        return io.NodeOutput(VideoFromFile(os.path.join(folder_paths.get_input_directory(), file)))


class ShowClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MediaShowClip",
            inputs=[io.String.Input("filename", default="clip.mp4")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, filename):
        return io.NodeOutput(ui=ui.PreviewVideo([ui.SavedResult(filename, "v", io.FolderType.output)]))


class MakeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="MediaMakeAudio", outputs=[io.Audio.Output()])

    @classmethod
    def execute(cls):
        return io.NodeOutput({"waveform": torch.zeros(1, 1, 800), "sample_rate": 8000})


class PlayAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MediaPlayAudio", inputs=[io.Audio.Input("audio")], is_output_node=True
        )

    @classmethod
    def execute(cls, audio):
        return io.NodeOutput(ui=ui.PreviewAudio(audio, cls=cls))


class ShowMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MediaShowMesh",
            inputs=[io.Image.Input("background")],
            outputs=[io.Mesh.Output()],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, background):
        mesh = Types.MESH(vertices=torch.zeros(1, 3, 3), faces=torch.tensor([[[0, 1, 2]]]))
        camera = {"position": [0, 0, 5], "target": [0, 0, 0], "zoom": 1}
        shown = ui.PreviewUI3D("3d/model.glb", camera, bg_image=background)
        return io.NodeOutput(mesh, ui=shown)


class SaveAnimation(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MediaSaveAnimation",
            inputs=[io.Image.Input("images"), io.Combo.Input("format", options=["webp", "png"])],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, format):
        if format == "webp":
            shown = ui.ImageSaveHelper.get_save_animated_webp_ui(
                images, "anim", cls=cls, fps=4.0, lossless=True, quality=80, method=4
            )
        else:
            shown = ui.ImageSaveHelper.get_save_animated_png_ui(
                images, "anim", cls=cls, fps=4.0, compress_level=4
            )
        return io.NodeOutput(ui=shown)


class Ext(ComfyExtension):
    async def get_node_list(self):
        return [
            MakeVideo, VideoInfo, SaveVideo, LoadClip, ShowClip, MakeAudio, PlayAudio,
            ShowMesh, SaveAnimation,
        ]  # fmt: skip


async def comfy_entrypoint():
    return Ext()
"""


@pytest.fixture
def runtime(write_pack, make_runtime):
    write_pack("media_pack", {"__init__.py": PACK})
    return make_runtime()


def _video(**node) -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 12, "height": 6, "batch_size": 4, "color": 0},
        },
        "2": {"class_type": "MediaMakeVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "3": node,
    }


def _shown(result, node: str) -> dict:
    return json.loads(json.dumps(result.outputs[node]))


def test_media_pack_registers_with_comfyuis_video_options(runtime):
    from loom.nodes.object_info import object_info

    assert not [f for f in runtime.registry.failures if "media" in str(f)]
    info = object_info(runtime.registry)["MediaSaveVideo"]
    assert info["input"]["required"]["format"][1]["options"] == ["auto", "mp4"]
    assert info["input"]["required"]["codec"][1]["options"] == ["auto", "h264"]
    assert object_info(runtime.registry)["MediaShowMesh"]["output"] == ["MESH"]


def test_video_from_components_flows_and_reports_its_shape(runtime):
    node = {"class_type": "MediaVideoInfo", "inputs": {"video": ["2", 0]}}
    result = runtime.executor.run_prompt(_video(**node))
    assert result.error is None, result.error
    assert result.values["3"] == ([12], [6], [0.5])
    assert _shown(result, "3") == {"text": ["12x6, 4 frames, 0.5s"]}


def test_saving_a_video_file_fails_naming_the_node(runtime):
    node = {
        "class_type": "MediaSaveVideo",
        "inputs": {"video": ["2", 0], "format": "mp4", "codec": "h264"},
    }
    result = runtime.executor.run_prompt(_video(**node))
    assert result.error is not None
    message = result.error["exception_message"]
    assert "node 3 (MediaSaveVideo)" in message and "encoding a video file" in message
    assert "Traceback" not in message


def test_a_video_file_saved_unchanged_is_copied(runtime):
    data = b"\x00\x00\x00\x18ftypmp42 not decoded by Loom"
    folder = runtime.settings.directory("input")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.mp4").write_bytes(data)
    prompt = {
        "1": {"class_type": "MediaLoadClip", "inputs": {"file": "in.mp4"}},
        "2": {
            "class_type": "MediaSaveVideo",
            "inputs": {"video": ["1", 0], "format": "auto", "codec": "auto"},
        },
    }
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    assert (runtime.settings.directory("output") / "clip.mp4").read_bytes() == data
    entry = {"filename": "clip.mp4", "subfolder": "", "type": "output"}
    assert _shown(result, "2") == {"images": [entry], "animated": [True]}
    info = {"class_type": "MediaVideoInfo", "inputs": {"video": ["1", 0]}}
    result = runtime.executor.run_prompt({"1": prompt["1"], "3": info})
    assert "node 3 (MediaVideoInfo): decoding a video file" in result.error["exception_message"]


def test_preview_video_shows_saved_files_as_comfyui_does(runtime):
    prompt = {"1": {"class_type": "MediaShowClip", "inputs": {"filename": "clip.mp4"}}}
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    assert _shown(result, "1") == {
        "images": [{"filename": "clip.mp4", "subfolder": "v", "type": "output"}],
        "animated": [True],
    }


def test_preview_audio_fails_naming_the_node(runtime):
    prompt = {
        "1": {"class_type": "MediaMakeAudio", "inputs": {}},
        "2": {"class_type": "MediaPlayAudio", "inputs": {"audio": ["1", 0]}},
    }
    result = runtime.executor.run_prompt(prompt)
    assert result.error is not None
    message = result.error["exception_message"]
    assert "node 2 (MediaPlayAudio)" in message and "encoding audio as flac" in message


def test_preview_ui3d_writes_the_background_and_shows_the_model(runtime):
    prompt = {
        "1": empty_image(8, 0x0000FF),
        "2": {"class_type": "MediaShowMesh", "inputs": {"background": ["1", 0]}},
    }
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    model, camera, background = _shown(result, "2")["result"]
    assert (model, camera["position"]) == ("3d/model.glb", [0, 0, 5])
    assert background.startswith("temp/bg_") and background.endswith(".png")
    path = runtime.settings.directory("temp") / background.removeprefix("temp/")
    with Image.open(path) as picture:
        assert picture.size == (8, 8) and picture.getpixel((4, 4)) == (0, 0, 255)
    ((mesh,),) = result.values["2"]
    assert tuple(mesh.faces.shape) == (1, 1, 3)


def test_value_types_import_without_torch_until_a_tensor_alias_is_read():
    """A V3 pack that never touches tensors keeps ``loom nodes`` torch-free."""
    import subprocess

    probe = (
        "import sys, loom_comfy_compat.plugin\n"
        "from comfy_api.latest import Input, InputImpl, Types\n"
        "from comfy_api.input import VideoInput\n"
        "import comfy_api.util, comfy_api.input_impl\n"
        "print('torch' in sys.modules)\n"
        "from comfy_api.input import ImageInput\n"
        "print(ImageInput is sys.modules['torch'].Tensor)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("format", ["webp", "png"])
def test_image_save_helper_writes_one_animated_file_with_the_prompt(runtime, format):
    prompt = {  # two different frames (a codec merges identical ones)
        "1": empty_image(8, 0x00FF00),
        "3": empty_image(8, 0xFF0000),
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["3", 0]}},
        "2": {"class_type": "MediaSaveAnimation", "inputs": {"images": ["4", 0], "format": format}},
    }
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    entry = {"filename": f"anim_00001_.{format}", "subfolder": "", "type": "output"}
    assert _shown(result, "2") == {"images": [entry], "animated": [True]}
    path = runtime.settings.directory("output") / entry["filename"]
    if format == "png":  # the prompt rides in a private chunk after the image data
        assert b"comfprompt\x00" in path.read_bytes()
    with Image.open(path) as picture:
        assert picture.n_frames == 2 and picture.convert("RGB").getpixel((4, 4)) == (0, 255, 0)
        if format == "webp":
            model = picture.getexif()[0x0110]
            assert (
                json.loads(model.removeprefix("prompt:"))["2"]["class_type"] == "MediaSaveAnimation"
            )
