"""Checks a node runs on its inputs before its maths, so that input it cannot work with is
reported as a :class:`~loom.errors.NodeInputError` naming the node and the inputs, not as
the tensor library's error from deep inside (``The size of tensor a (2) must match ...``).

Each check says what ComfyUI's node would have needed; none changes a value.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from loom.errors import NodeInputError
from loom.types.handles import TextContextModel

__all__ = [
    "check_batches",
    "check_matching",
    "check_min_size",
    "check_padding",
    "check_positive",
    "check_resized",
    "check_text_context",
    "check_vae_pixels",
]


def check_batches(
    node: str, tensors: Mapping[str, Any], *, broadcast: Collection[str] = ()
) -> None:
    """The tensors' batch sizes (dim 0) are equal, except that the inputs named in
    ``broadcast`` may have a batch of 1 (the node repeats it)."""
    check_matching(
        node,
        tensors,
        dim=0,
        what="batch size",
        broadcast=broadcast,
        hint="repeat or pick items so that the batches match (Repeat*Batch, *FromBatch nodes)",
    )


def check_matching(
    node: str,
    tensors: Mapping[str, Any],
    *,
    dim: int,
    what: str,
    broadcast: Collection[str] = (),
    hint: str | None = None,
) -> None:
    """The tensors' sizes along ``dim`` (called ``what`` in the message) are equal, except
    that the inputs named in ``broadcast`` may have size 1 there."""
    sizes = {name: int(tensor.shape[dim]) for name, tensor in tensors.items()}
    fixed = {name: size for name, size in sizes.items() if not (name in broadcast and size == 1)}
    if len(set(fixed.values())) <= 1:
        return
    listed = ", ".join(f"{name} has {size}" for name, size in sizes.items())
    ones = [name for name in sizes if name in broadcast]
    may = f" (or 1 for {' or '.join(ones)})" if ones else ""
    raise NodeInputError(
        node,
        tuple(sizes),
        f"inputs {' and '.join(sizes)} must have the same {what}{may}, but {listed}",
        hint=hint,
    )


def check_padding(
    node: str, image_name: str, height: int, width: int, radius_name: str, radius: int
) -> None:
    """A filter of ``radius`` mirrors the image at its edges, which needs the image to be
    larger than the radius on both sides."""
    if radius < height and radius < width:
        return
    raise NodeInputError(
        node,
        (image_name, radius_name),
        f"{radius_name} {radius} needs the {image_name} to be larger than {radius} pixels on "
        f"each side, but it is {width}x{height}",
        hint=(
            f"lower {radius_name} to at most {min(height, width) - 1}"
            if min(height, width) > 1
            else f"use a larger {image_name} (more than {radius} pixels on each side)"
        ),
    )


def check_min_size(
    node: str, input_name: str, height: int, width: int, minimum: int, why: str
) -> None:
    """An image at least ``minimum`` pixels on each side (``why`` says what needs it)."""
    if height >= minimum and width >= minimum:
        return
    raise NodeInputError(
        node,
        input_name,
        f"{input_name} must be at least {minimum}x{minimum} pixels ({why}), "
        f"but it is {width}x{height}",
    )


def check_vae_pixels(node: str, pixels: Any, vae: Any, input_name: str = "pixels") -> None:
    """A VAE crops an IMAGE ``[B, H, W, C]`` to whole blocks of its downscale ratio, so the
    image needs at least one block (ComfyUI's VAEEncode fails on an empty crop)."""
    ratio = getattr(vae, "downscale_ratio", 8)
    why = f"the VAE encodes {ratio}x{ratio} blocks"
    check_min_size(node, input_name, pixels.shape[1], pixels.shape[2], ratio, why)


def check_resized(node: str, input_name: str, width: int, height: int, cause: str) -> None:
    """A resize whose target size, from ``cause``, has no pixels."""
    if width >= 1 and height >= 1:
        return
    raise NodeInputError(
        node, input_name, f"{cause} gives a {width}x{height} result, which has no pixels"
    )


def check_positive(node: str, values: Mapping[str, float], why: str) -> None:
    """Each of these inputs is greater than 0 (``why`` says what needs it)."""
    for name, value in values.items():
        if not value > 0:
            raise NodeInputError(node, name, f"{name} must be greater than 0 ({why}), got {value}")


def check_text_context(node: str, model: Any, conditionings: Mapping[str, Any]) -> None:
    """Each CONDITIONING (by input name) is as wide as the text context ``model`` attends to
    (:class:`~loom.types.TextContextModel`; a model that does not say is not checked).
    ComfyUI fails inside the model's attention here ("mat1 and mat2 shapes cannot be
    multiplied") when a prompt was encoded by another model's text encoder."""
    if not isinstance(model, TextContextModel):
        return
    width = int(model.context_width)
    for name, conditioning in conditionings.items():
        for item in conditioning or ():
            got = int(item[0].shape[-1])
            if got != width:
                raise NodeInputError(
                    node,
                    name,
                    f"input {name} holds conditioning {got} wide, but the model "
                    f"({model.name}) reads text context {width} wide: it was encoded by "
                    "another model's text encoder",
                    hint="encode the prompt with the CLIP loaded with this model (the same "
                    "checkpoint, or the text encoders of its family)",
                )
