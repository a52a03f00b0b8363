"""AutoencoderKL in the original checkpoint layout (``first_stage_model.*``).

``encoder`` / ``decoder`` with ``down.N.block.M`` / ``up.N.block.M``, ``mid.block_1``,
``mid.attn_1``, ``quant_conv`` and ``post_quant_conv``: CompVis' names, so a checkpoint loads
without renaming. :class:`AutoencoderKL` works on ``[-1, 1]`` images and unscaled latents;
the latent scale (0.18215 for SD1.x) belongs to the model's latent format. Tiled encode and
decode average three tilings with feathered overlaps, as ComfyUI does.
"""

from __future__ import annotations

import logging

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from loom.memory import ComputeTarget, MemoryManager, ModelHandle, cpu_device, ops
from loom.tiling import ScaleFn, Tiling, tiled_scale
from loom_sd15.convert import VAE_PREFIX, vae_conversion

log = logging.getLogger(__name__)

#: what running out of device memory raises (torch.OutOfMemoryError is torch 2.3+)
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@attrs.frozen
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = attrs.field(default=(1, 2, 4, 4), converter=tuple)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    norm_groups: int = 32
    #: False for VAEs without the 1x1 ``quant_conv`` / ``post_quant_conv`` (Flux's ``ae``).
    use_quant_conv: bool = True

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


SD15_VAE = VAEConfig()


def _norm(channels: int, groups: int) -> nn.Module:
    return ops.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = ops.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = ops.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (
            ops.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, 1x1 convolutions for q, k, v, out."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = ops.Conv2d(channels, channels, 1)
        self.k = ops.Conv2d(channels, channels, 1)
        self.v = ops.Conv2d(channels, channels, 1)
        self.proj_out = ops.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (t(n).reshape(b, 1, c, h * w).transpose(2, 3) for t in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` (res blocks) and an optional resampler."""

    def __init__(self, blocks: list[nn.Module], attrname: str | None, resample: nn.Module | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()  # SD's VAE has no attention inside levels
        if attrname is not None:
            setattr(self, attrname, resample)


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c, g = config, config.norm_groups
        self.conv_in = ops.Conv2d(c.in_channels, c.ch, 3, padding=1)
        in_mult = (1, *c.ch_mult)
        self.down = nn.ModuleList()
        block_out = c.ch
        for level, mult in enumerate(c.ch_mult):
            block_in, block_out = c.ch * in_mult[level], c.ch * mult
            blocks = []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            last = level == len(c.ch_mult) - 1
            self.down.append(
                _Level(
                    blocks, None if last else "downsample", None if last else Downsample(block_out)
                )
            )
        self.mid = _Mid(block_out, g)
        self.norm_out = _norm(block_out, g)
        self.conv_out = ops.Conv2d(block_out, 2 * c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c, g = config, config.norm_groups
        block_in = c.ch * c.ch_mult[-1]
        self.conv_in = ops.Conv2d(c.z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, g)
        levels: list[nn.Module] = []
        for level in reversed(range(len(c.ch_mult))):
            block_out = c.ch * c.ch_mult[level]
            blocks = []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            levels.insert(
                0,
                _Level(
                    blocks, "upsample" if level else None, Upsample(block_in) if level else None
                ),
            )
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, g)
        self.conv_out = ops.Conv2d(block_in, c.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """``encode(x) -> latent mean`` and ``decode(z) -> image``, both unscaled, images in [-1, 1]."""

    def __init__(self, config: VAEConfig = SD15_VAE) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.use_quant_conv:
            self.quant_conv = ops.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
            self.post_quant_conv = ops.Conv2d(config.embed_dim, config.z_channels, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the posterior (ComfyUI encodes deterministically, without sampling)."""
        moments = self.encoder(x)
        if self.config.use_quant_conv:
            moments = self.quant_conv(moments)
        return moments.chunk(2, dim=1)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.use_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z)


# --- tiling ---------------------------------------------------------------------------


def three_tilings(
    samples: torch.Tensor,
    fn: ScaleFn,
    tile: int,
    overlap: int,
    scale: float,
    out_channels: int,
) -> torch.Tensor:
    """ComfyUI's tiled VAE: the mean of tall, wide and square tilings (fewer seams), summed
    in ComfyUI's order (decode: tall, wide, square; encode: square, wide, tall)."""
    tall, wide, square = (tile * 2, tile // 2), (tile // 2, tile * 2), (tile, tile)
    shapes = (tall, wide, square) if scale >= 1 else (square, wide, tall)
    total = tiled_scale(samples, fn, Tiling(shapes[0], overlap, scale), out_channels)
    for shape in shapes[1:]:
        total = total + tiled_scale(samples, fn, Tiling(shape, overlap, scale), out_channels)
    return total / 3.0


#: ComfyUI's SD1.5 latent-preview factors (``latent_formats.SD15``): latent channel -> RGB.
SD15_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


# --- the VAE socket value -------------------------------------------------------------

#: Compute dtypes the VAE runs in (ComfyUI's ``working_dtypes``): fp16 can overflow the
#: decoder's activations, so where the manager's policy picks fp16 the VAE computes in fp32.
VAE_DTYPES = (torch.bfloat16, torch.float32)


class SD15Vae:
    """The VAE socket value: IMAGE ``[B, H, W, 3]`` in [0, 1] <-> unscaled latents."""

    def __init__(
        self,
        handle: ModelHandle,
        config: VAEConfig = SD15_VAE,
        memory: MemoryManager | None = None,
    ) -> None:
        self.handle = handle
        self.config = config
        # Without a runtime's manager, a CPU one: the same load path (patches applied,
        # device and dtype decided by a manager), not a second way to run.
        self.memory = memory if memory is not None else MemoryManager(cpu_device())
        self.downscale_ratio = config.downscale
        self.latent_channels = config.embed_dim
        #: where the VAE's keys sit in a single-file checkpoint
        self.checkpoint_prefix = VAE_PREFIX

    def clone(self) -> SD15Vae:
        return SD15Vae(self.handle.clone(), self.config, self.memory)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The VAE's weights, patches applied, as ``first_stage_model.*`` (attention
        projections as the 1x1 convolutions the module holds)."""
        from loom.memory import patched_tensors

        return vae_conversion(self.checkpoint_prefix).to_checkpoint(patched_tensors(self.handle))

    @property
    def module(self) -> AutoencoderKL:
        return self.handle.module

    def _prepare(self, activation_bytes: int = 0) -> ComputeTarget:
        """Load the VAE with ``activation_bytes`` left free beside it; where and how it computes."""
        self.memory.load([self.handle], extra_memory=activation_bytes)
        return self.handle.compute_target

    def _compute_dtype(self) -> torch.dtype:
        return self.memory.target_for(self.handle).dtype

    def _in_batches(
        self, method: str, inputs: torch.Tensor, per_item_bytes: int
    ) -> torch.Tensor | None:
        """The VAE's ``method`` ("encode" or "decode") over ``inputs`` on the device, as many
        items per call as fit beside the models; None when the device runs out of memory
        anyway (callers then tile, as ComfyUI does)."""
        target = self._prepare(per_item_bytes)
        run = getattr(self.module, method)
        step = self._per_batch(per_item_bytes, inputs.shape[0])
        try:
            return torch.cat(
                [
                    run(inputs[i : i + step].to(target.device, target.dtype)).float().cpu()
                    for i in range(0, inputs.shape[0], step)
                ]
            )
        except _OUT_OF_MEMORY:
            log.warning("out of device memory in VAE %s: retrying tiled", method)
            return None

    def _per_batch(self, per_item_bytes: int, batch: int) -> int:
        """How many items one call may take so their activations fit next to the models."""
        room = self.memory.budget_bytes() - self.memory.used_bytes
        return max(1, min(batch, room // max(per_item_bytes, 1)))

    def crop(self, pixels: torch.Tensor) -> torch.Tensor:
        """Centre-crop H and W to multiples of the downscale factor (ComfyUI's rule)."""
        r = self.downscale_ratio
        for dim in (1, 2):
            size = pixels.shape[dim]
            keep = (size // r) * r
            if keep != size:
                pixels = pixels.narrow(dim, (size % r) // 2, keep)
        return pixels

    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        x = self.crop(image[..., :3]).movedim(-1, 1).float() * 2.0 - 1.0
        per_item = self.encode_memory_estimate(tuple(x[:1].shape), self._compute_dtype())
        latents = self._in_batches("encode", x, per_item)
        return self.encode_tiled(image) if latents is None else latents

    @torch.inference_mode()
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        per_item = self.memory_estimate(tuple(samples[:1].shape), self._compute_dtype())
        out = self._in_batches("decode", samples.float(), per_item)
        if out is None:
            return self.decode_tiled(samples)
        return ((out + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)

    @torch.inference_mode()
    def decode_tiled(
        self, samples: torch.Tensor, tile_size: int = 512, overlap: int = 64
    ) -> torch.Tensor:
        target = self._prepare()
        r = self.downscale_ratio
        out = three_tilings(
            samples.float(),
            lambda z: self.module.decode(z.to(target.device, target.dtype)),
            max(tile_size // r, 2),
            overlap // r,
            float(r),
            self.config.out_channels,
        )
        return ((out + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)

    @torch.inference_mode()
    def encode_tiled(
        self, image: torch.Tensor, tile_size: int = 512, overlap: int = 64
    ) -> torch.Tensor:
        target = self._prepare()
        x = self.crop(image[..., :3]).movedim(-1, 1).float() * 2.0 - 1.0
        r = self.downscale_ratio
        return three_tilings(
            x,
            lambda p: self.module.encode(p.to(target.device, target.dtype)),
            max(tile_size, 2 * r),
            overlap,
            1.0 / r,
            self.config.embed_dim,
        )

    def memory_estimate(self, input_shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Activation bytes of a decode of latents ``input_shape`` (ComfyUI's SD1.x factor)."""
        b, _, h, w = input_shape
        return int(2178 * b * h * w * 64 * dtype.itemsize)

    def encode_memory_estimate(self, input_shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Activation bytes of an encode of pixels ``input_shape`` (ComfyUI's SD1.x factor)."""
        b, _, h, w = input_shape
        return int(1767 * b * h * w * dtype.itemsize)
