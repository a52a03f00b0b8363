"""Image tokens and their position ids: patchifying a latent, and where Kontext's
reference latents go (ComfyUI's ``reference_latents_method``)."""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from loom_flux.dit_config import PATCH
from loom_flux.dit_options import RopeScale

#: ComfyUI's ``reference_latents_method`` values (``"uxo/uno"`` in the node is ``"uxo"``).
REFERENCE_METHODS = ("offset", "index", "uxo", "index_timestep_zero")
DEFAULT_REFERENCE_METHOD = "offset"


def image_ids(batch: int, h_len: int, w_len: int, device: torch.device) -> torch.Tensor:
    """``[B, h*w, 3]`` ids: t = 0, row, column of each 2x2 patch."""
    ids = torch.zeros(h_len, w_len, 3, device=device)
    ids[..., 1] = torch.arange(h_len, device=device, dtype=torch.float32)[:, None]
    ids[..., 2] = torch.arange(w_len, device=device, dtype=torch.float32)[None, :]
    return ids.reshape(1, h_len * w_len, 3).expand(batch, -1, -1)


def scaled_image_ids(
    batch: int,
    h_len: int,
    w_len: int,
    device: torch.device,
    rope: RopeScale,
    index: float = 0.0,
    h_offset: int = 0,
    w_offset: int = 0,
) -> torch.Tensor:
    """:func:`image_ids` under ScaleROPE (ComfyUI's Flux ``process_img`` with
    ``rope_options``): time ``index + shift_t``; rows ``linspace`` from ``h_offset + shift_y``
    over ``(h_len - 1) * scale_y``; columns likewise with x. Offsets are in patches."""
    ids = torch.zeros(h_len, w_len, 3, device=device)
    top = h_offset + rope.shift_y
    left = w_offset + rope.shift_x
    rows = torch.linspace(top, top + (h_len - 1.0) * rope.scale_y, steps=h_len, device=device)
    cols = torch.linspace(left, left + (w_len - 1.0) * rope.scale_x, steps=w_len, device=device)
    ids[..., 0] = index + rope.shift_t
    ids[..., 1] = ids[..., 1] + rows[:, None]
    ids[..., 2] = ids[..., 2] + cols[None, :]
    return ids.reshape(1, h_len * w_len, 3).expand(batch, -1, -1)


def patchify(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` (H, W even) -> ``[B, H/2 * W/2, C*4]``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)


def unpatchify(x: torch.Tensor, h_len: int, w_len: int) -> torch.Tensor:
    b = x.shape[0]
    c = x.shape[-1] // (PATCH * PATCH)
    x = x.reshape(b, h_len, w_len, c, PATCH, PATCH)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h_len * PATCH, w_len * PATCH)


@attrs.frozen
class ReferencePlace:
    """Where a reference latent's tokens go: time id ``index``, and its rows and columns
    shifted by ``h_offset`` / ``w_offset`` latent pixels (rounded to patches)."""

    index: int
    h_offset: int = 0
    w_offset: int = 0


def reference_positions(
    method: str, shapes: list[tuple[int, int]], h_len: int, w_len: int
) -> list[ReferencePlace]:
    """ComfyUI's placement of reference latents of ``shapes`` (latent ``(h, w)``) beside an
    image of ``h_len x w_len`` patches, for each ``reference_latents_method``:

    - ``offset`` (Kontext's default): all at time 1; each new one beside or below those
      already placed, along the side that keeps the placed block squarer;
    - ``index`` / ``index_timestep_zero``: the n-th at time n, unshifted;
    - ``uxo`` (UNO / USO): all at time 0, each shifted diagonally past the image and the
      references before it.

    An unknown method places as ``offset``, as ComfyUI does.
    """
    places = []
    placed_h = placed_w = index = 0
    for ref_h, ref_w in shapes:
        if method in ("index", "index_timestep_zero"):
            index += 1
            places.append(ReferencePlace(index))
        elif method == "uxo":
            places.append(ReferencePlace(0, h_len * PATCH + placed_h, w_len * PATCH + placed_w))
            placed_h += ref_h
            placed_w += ref_w
        else:
            h_offset = w_offset = 0
            if ref_h + placed_h > ref_w + placed_w:
                w_offset = placed_w
            else:
                h_offset = placed_h
            placed_h = max(placed_h, ref_h + h_offset)
            placed_w = max(placed_w, ref_w + w_offset)
            places.append(ReferencePlace(1, h_offset, w_offset))
    return places


def append_reference(
    img: torch.Tensor,
    img_ids: torch.Tensor,
    ref: torch.Tensor,
    place: ReferencePlace,
    rope: RopeScale | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kontext: a reference latent's tokens after the image's, at ``place`` (its ids under
    ``rope`` when ScaleROPE is set)."""
    h, w = ref.shape[-2:]
    pad_h, pad_w = (-h) % PATCH, (-w) % PATCH
    if pad_h or pad_w:
        ref = F.pad(ref, (0, pad_w, 0, pad_h), mode="circular")
    h_len, w_len = (h + pad_h) // PATCH, (w + pad_w) // PATCH
    h_offset = (place.h_offset + PATCH // 2) // PATCH
    w_offset = (place.w_offset + PATCH // 2) // PATCH
    if rope is not None:
        ids = scaled_image_ids(
            img.shape[0], h_len, w_len, img.device, rope, place.index, h_offset, w_offset
        )
    else:
        ids = image_ids(img.shape[0], h_len, w_len, img.device).clone()
        ids[..., 0] = place.index
        ids[..., 1] += h_offset
        ids[..., 2] += w_offset
    tokens = patchify(ref).expand(img.shape[0], -1, -1)
    return torch.cat((img, tokens), dim=1), torch.cat((img_ids, ids), dim=1)
