"""GLIGEN text boxes for SD1.x: the position net and the gated self-attention layers.

A GLIGEN file (``models/gligen/``, e.g. ``gligen_sd14_textbox_pruned.safetensors``) holds

* ``position_net.*``: the grounding tokenizer. Each box ``(x1, y1, x2, y2)`` (fractions of
  the latent) gets a Fourier embedding (8 frequencies ``100 ** (k / 8)``, sin and cos of each
  coordinate), is concatenated with the CLIP pooled text of its phrase and mapped by a
  3-layer MLP to an object token. Padding slots (up to :data:`MAX_OBJECTS`) take learned
  null features instead.
* ``{input_blocks,middle_block,output_blocks}.N.1.transformer_blocks.0.fuser.*``: one
  gated self-attention layer per spatial transformer of the UNet. After a block's
  self-attention the visual tokens attend over themselves plus the projected object
  tokens; the result is added through ``tanh(alpha_attn)``, then a GEGLU feed-forward
  through ``tanh(alpha_dense)``.

The layers run through the UNet's :class:`~loom_sd15.unet.SelfAttentionPatch` hook, the
fuser of spatial transformer ``i`` at ``transformer_index`` ``i`` (ComfyUI's GLIGEN
``middle_patch``). Heads follow ComfyUI: 8 when the object tokens are 768 wide (SD1.x),
else 64 channels per head.

The modules are a :class:`loom.memory.ModelHandle` the boxes name as a model they need
(:class:`loom.types.NeedsModels`), so the sampler loads them through the memory manager with
the UNet; they compute at the handle's ``compute_target``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import torch
from torch import nn

from loom.errors import LoomError
from loom.memory import LoadPolicy, ModelHandle, load_into_module, ops
from loom_sd15.unet import CrossAttention, FeedForward

#: object slots of the position net (ComfyUI's ``max_objs``)
MAX_OBJECTS = 30
FOURIER_FREQS = 8
POSITION_DIM = FOURIER_FREQS * 2 * 4  # sin and cos of x1, y1, x2, y2
_BLOCK_GROUPS = ("input_blocks", "middle_block", "output_blocks")
_FUSER_KEY = re.compile(
    r"(?:^|\.)(input_blocks|middle_block|output_blocks)\.(\d+)\..*?\.fuser\.(.+)$"
)


class GatedSelfAttention(nn.Module):
    """One fuser: ``x += tanh(a) * attn(norm1([x; linear(objs)]))[:N]``, then the gated FF."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.linear = ops.Linear(context_dim, query_dim)
        self.attn = CrossAttention(query_dim, None, heads, head_dim)
        self.ff = FeedForward(query_dim)
        self.norm1 = ops.LayerNorm(query_dim)
        self.norm2 = ops.LayerNorm(query_dim)
        self.alpha_attn = nn.Parameter(torch.tensor(0.0))
        self.alpha_dense = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        visual = x.shape[1]
        objs = self.linear(objs)
        gate_attn = torch.tanh(self.alpha_attn.to(x.device, torch.float32)).to(x.dtype)
        gate_dense = torch.tanh(self.alpha_dense.to(x.device, torch.float32)).to(x.dtype)
        attended = self.attn(self.norm1(torch.cat([x, objs], dim=1)))[:, :visual]
        x = x + gate_attn * attended
        return x + gate_dense * self.ff(self.norm2(x))


def fourier_embedding(boxes: torch.Tensor, freqs: int = FOURIER_FREQS) -> torch.Tensor:
    """``[..., 4]`` boxes -> ``[..., freqs * 8]``: per frequency, sin of the 4 coordinates
    then their cos (GLIGEN's ``FourierEmbedder``, temperature 100)."""
    bands = 100.0 ** (torch.arange(freqs, dtype=torch.float32) / freqs)
    angles = bands.to(boxes.device, boxes.dtype)[:, None] * boxes.unsqueeze(-2)  # [..., F, 4]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class PositionNet(nn.Module):
    """Boxes and phrase embeddings -> object tokens ``[B, N, out_dim]``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.linears = nn.Sequential(
            ops.Linear(in_dim + POSITION_DIM, 512),
            nn.SiLU(),
            ops.Linear(512, 512),
            nn.SiLU(),
            ops.Linear(512, out_dim),
        )
        self.null_positive_feature = nn.Parameter(torch.zeros(in_dim))
        self.null_position_feature = nn.Parameter(torch.zeros(POSITION_DIM))

    def forward(
        self, boxes: torch.Tensor, masks: torch.Tensor, embeddings: torch.Tensor
    ) -> torch.Tensor:
        masks = masks.unsqueeze(-1)
        positions = fourier_embedding(boxes)
        null_text = self.null_positive_feature.to(boxes.device, boxes.dtype).view(1, 1, -1)
        null_position = self.null_position_feature.to(boxes.device, boxes.dtype).view(1, 1, -1)
        embeddings = embeddings * masks + (1 - masks) * null_text
        positions = positions * masks + (1 - masks) * null_position
        return self.linears(torch.cat([embeddings, positions], dim=-1))


@attrs.frozen
class FuserShape:
    """Where a fuser sits in the file and its widths."""

    prefix: str  # the file's key prefix up to and including ``fuser.``
    query_dim: int
    context_dim: int

    @property
    def heads(self) -> tuple[int, int]:
        """``(heads, head_dim)``: ComfyUI's rule, 8 heads for SD1.x's 768-wide tokens."""
        if self.context_dim == 768:
            return 8, self.query_dim // 8
        return max(1, self.query_dim // 64), 64


class GligenNet(nn.Module):
    """The position net plus the fusers in UNet order (``fusers.i`` <- transformer ``i``)."""

    def __init__(self, fusers: Sequence[FuserShape], in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.position_net = PositionNet(in_dim, out_dim)
        self.fusers = nn.ModuleList(
            GatedSelfAttention(f.query_dim, f.context_dim, *f.heads) for f in fusers
        )

    @property
    def text_dim(self) -> int:
        """Width of the pooled phrase embedding the position net takes."""
        return self.position_net.in_dim


def fuser_shapes(tensors: Mapping[str, torch.Tensor], source: str) -> list[FuserShape]:
    """The file's fusers in UNet order (input blocks, middle block, output blocks)."""
    found: dict[tuple[int, int], str] = {}
    for key in tensors:
        match = _FUSER_KEY.search(key)
        if match is not None:
            group, block, suffix = match.groups()
            prefix = key[: len(key) - len(suffix)]
            found.setdefault((_BLOCK_GROUPS.index(group), int(block)), prefix)
    shapes = []
    for _, prefix in sorted(found.items()):
        weight = tensors.get(prefix + "linear.weight")
        if weight is None or len(weight.shape) != 2:
            raise LoomError(f"{source}: GLIGEN layer {prefix[:-1]} has no 2-D linear.weight")
        shapes.append(FuserShape(prefix, int(weight.shape[0]), int(weight.shape[1])))
    return shapes


def read_gligen(tensors: Mapping[str, torch.Tensor], source: str) -> GligenNet:
    """Build the GLIGEN modules from a file's tensors (its real key layout).

    Raises :class:`LoomError` naming ``source`` when the file is not a GLIGEN file.
    """
    fusers = fuser_shapes(tensors, source)
    null_text = tensors.get("position_net.null_positive_feature")
    last = tensors.get("position_net.linears.4.weight")
    if not fusers or null_text is None or last is None:
        raise LoomError(
            f"{source} is not a GLIGEN file: it has no "
            + ("gated self-attention layers (*.fuser.*)" if not fusers else "position_net")
            + f" ({len(tensors)} tensors, e.g. {', '.join(list(tensors)[:3])})",
            hint="GLIGENLoader loads GLIGEN text-box models such as "
            "gligen_sd14_textbox_pruned.safetensors from models/gligen",
        )
    state: dict[str, torch.Tensor] = {
        key: tensors[key] for key in tensors if key.startswith("position_net.")
    }
    for index, fuser in enumerate(fusers):
        for key in tensors:
            if key.startswith(fuser.prefix):
                state[f"fusers.{index}.{key[len(fuser.prefix) :]}"] = tensors[key]
    with torch.device("meta"):
        net = GligenNet(fusers, int(null_text.shape[0]), int(last.shape[0]))
    load_into_module(net, state, LoadPolicy(missing="error", unexpected="ignore"), source=source)
    return net.eval()


@attrs.frozen(eq=False)
class Gligen:
    """The GLIGEN socket value: the handle of the loaded modules (a :class:`GligenNet`) and
    the file they came from."""

    handle: ModelHandle
    file: str

    @property
    def net(self) -> GligenNet:
        return self.handle.module

    @property
    def text_dim(self) -> int:
        return self.net.text_dim

    @property
    def fuser_count(self) -> int:
        return len(self.net.fusers)


def load_gligen(path: Path) -> Gligen:
    """Read a GLIGEN safetensors file (memory-mapped)."""
    from loom.memory import open_safetensors

    net = read_gligen(open_safetensors(path), path.name)
    return Gligen(ModelHandle(net, name=f"gligen:{path.name}"), path.name)


@attrs.frozen(eq=False)
class GligenBox:
    """One phrase in a box, in latent pixels (ComfyUI's ``(pooled, h, w, y, x)`` entry)."""

    text: torch.Tensor  # pooled CLIP embedding [1, D]
    height: int
    width: int
    y: int
    x: int


@attrs.frozen(eq=False)
class GligenBoxes:
    """The ``gligen`` option of a conditioning entry: the model and the boxes placed so far."""

    gligen: Gligen
    boxes: tuple[GligenBox, ...]

    def models(self, model: object) -> list[ModelHandle]:
        """The GLIGEN modules' handle, for the sampler to load with ``model``."""
        return [self.gligen.handle]

    def objects(self, batch: int, height: int, width: int) -> torch.Tensor:
        """Object tokens ``[batch, MAX_OBJECTS, D]`` (float32, on the GLIGEN handle's compute
        device) for a latent of this size: boxes as fractions of it, empty slots masked to
        the learned null features."""
        device = self.gligen.handle.compute_target.device
        n = len(self.boxes)
        text_dim = self.gligen.text_dim
        boxes = torch.zeros(MAX_OBJECTS, 4)
        masks = torch.zeros(MAX_OBJECTS)
        texts = torch.zeros(MAX_OBJECTS, text_dim)
        for i, box in enumerate(self.boxes):
            boxes[i] = torch.tensor(
                (
                    box.x / width,
                    box.y / height,
                    (box.x + box.width) / width,
                    (box.y + box.height) / height,
                )
            )
            texts[i] = box.text.reshape(-1, text_dim)[0].float()
        masks[:n] = 1.0

        def batched(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(0).repeat(batch, *([1] * t.ndim)).to(device)

        with torch.inference_mode():
            return self.gligen.net.position_net(batched(boxes), batched(masks), batched(texts))


@attrs.frozen(eq=False)
class FuserPatch:
    """The :class:`~loom_sd15.unet.SelfAttentionPatch` running fuser ``i`` at transformer ``i``."""

    gligen: Gligen
    objects: torch.Tensor

    def __call__(self, x: torch.Tensor, transformer_index: int) -> torch.Tensor:
        fuser = self.gligen.net.fusers[transformer_index]
        device = self.gligen.handle.compute_target.device
        return fuser(x.to(device), self.objects.to(device, x.dtype)).to(x.device)


def check_fits(gligen: Gligen, unet: nn.Module, model_name: str, prompt_type: str) -> None:
    """A clear error when the GLIGEN layers do not match the UNet's spatial transformers
    (``prompt_type``: which conditioning input of the sampler carries the boxes)."""
    from loom_sd15.unet import SpatialTransformer

    widths = [
        m.transformer_blocks[0].attn1.to_q.in_features
        for m in unet.modules()
        if isinstance(m, SpatialTransformer)
    ]
    fusers = [f.linear.out_features for f in gligen.net.fusers]
    if widths == fusers:
        return
    raise LoomError(
        f"the {prompt_type} conditioning has GLIGEN boxes (GLIGENTextBoxApply) of the file "
        f"{gligen.file}, whose {len(fusers)} gated layers are for transformers of "
        f"widths {_widths(fusers)}, but the model {model_name} has {len(widths)} transformers "
        f"of widths {_widths(widths)}",
        hint="GLIGEN text-box files are made for one UNet: gligen_sd14_textbox is for SD1.x "
        "checkpoints (not SD2, SDXL or Flux)",
    )


def _widths(widths: Sequence[int]) -> str:
    unique = sorted(set(widths))
    return "/".join(str(w) for w in unique) if unique else "none"
