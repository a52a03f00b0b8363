"""Stub nodes written the classic ComfyUI way (plus one declarative node) for executor tests."""

from __future__ import annotations

import loom
from loom.executor.context import ExecutionBlocker

CALLS: list[str] = []


class EmptyImage:
    """Same input spec as ComfyUI's EmptyImage (returns a fake image: its size)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": (
                    "INT",
                    {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"},
                ),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = "image"

    def generate(self, width, height, batch_size=1, color=0):
        CALLS.append("EmptyImage")
        return ({"w": width, "h": height, "b": batch_size, "c": color},)


class ImageInvert:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"

    def invert(self, image):
        CALLS.append("ImageInvert")
        return ({**image, "inverted": not image.get("inverted", False)},)


class SaveImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    def save(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        CALLS.append("SaveImage")
        return {
            "ui": {
                "images": [
                    {
                        "filename": f"{filename_prefix}_00001_.png",
                        "subfolder": "",
                        "type": "output",
                        "seen": images,
                    }
                ]
            }
        }


class Const:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -1000, "max": 1000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        CALLS.append(f"Const:{value}")
        return (value,)


class Add:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "a": ("INT", {"forceInput": True}),
                "b": ("INT", {"default": 1, "min": -1000, "max": 1000}),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a, b):
        CALLS.append(f"Add:{a}+{b}")
        return (a + b,)


class Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        CALLS.append(f"Show:{value}")
        return {"ui": {"text": [repr(value)]}}


class Pick:
    """A combo and a float with bounds."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mode": (["a", "b", "c"],),
                "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0}),
                "flag": ("BOOLEAN", {"default": False}),
                "text": ("STRING", {"default": ""}),
            }
        }

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    def run(self, mode, scale, flag, text):
        return (f"{mode}:{scale}:{flag}:{text}",)


class Switch:
    """Lazy: only evaluates the branch it picks (ComfyUI's lazy-input contract)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "use_a": ("BOOLEAN", {"default": True}),
                "a": ("INT", {"lazy": True, "forceInput": True}),
                "b": ("INT", {"lazy": True, "forceInput": True}),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def check_lazy_status(self, use_a, a=None, b=None):
        return ["a"] if use_a and a is None else (["b"] if not use_a and b is None else [])

    def run(self, use_a, a=None, b=None):
        return (a if use_a else b,)


class MakeList:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 0, "max": 100})}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    def run(self, count):
        return (list(range(count)),)


class SumList:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "run"

    def run(self, values):
        return (sum(values),)


class Doubler:
    """Expands into a subgraph of two Add nodes computing x + x + 0 (node expansion)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"x": ("INT", {"forceInput": True})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, x, unique_id):
        graph = {
            f"{unique_id}.0.0.1": {"class_type": "Const", "inputs": {"value": x}},
            f"{unique_id}.0.0.2": {
                "class_type": "Add",
                "inputs": {"a": [f"{unique_id}.0.0.1", 0], "b": x},
            },
        }
        return {"result": ([f"{unique_id}.0.0.2", 0],), "expand": graph}


class Boom:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        raise ValueError(f"boom on {value}")


class Changing:
    """IS_CHANGED: returns the 'token' input, or raises when token < 0."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"token": ("INT", {"default": 0, "min": -10, "max": 10})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def IS_CHANGED(cls, token):
        if token < 0:
            raise RuntimeError("cannot tell")
        return token // 2

    def run(self, token):
        CALLS.append(f"Changing:{token}")
        return (token,)


class Checked:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 10})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        return True if value != 7 else "seven is not allowed"

    def run(self, value):
        return (value,)


class Block:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("INT", {"forceInput": True}),
                "message": ("STRING", {"default": ""}),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, message):
        return (ExecutionBlocker(message or None),)


@loom.node("SlowSteps", category="testing", output_node=True)
class SlowSteps:
    """Reports progress for `steps` steps; interrupts itself at step `stop_at` (via the executor)."""

    steps: int = loom.ui.int(3, min=1, max=100)
    stop_at: int = loom.ui.int(0, min=0, max=100)

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        for step in range(self.steps):
            if self.stop_at and step + 1 == self.stop_at:
                ctx.interrupt.set()
            ctx.progress(step + 1, self.steps)
        return loom.NodeOutput(ui={"text": [f"{self.steps} steps"]})


CLASSIC = [
    EmptyImage,
    ImageInvert,
    SaveImage,
    Const,
    Add,
    Show,
    Pick,
    Switch,
    MakeList,
    SumList,
    Doubler,
    Boom,
    Changing,
    Checked,
    Block,
]


class StubNodes:
    @loom.hookimpl
    def register_nodes(self, register):
        for cls in CLASSIC:
            register(cls, class_type=cls.__name__)
        register(SlowSteps)
