"""Linear layers whose weights are stored block-quantised (NVFP4, MXFP8), kept so in memory
and dequantised per forward to the compute dtype on the compute device, as ComfyUI does
where its fp4/mxfp8 matmul kernels do not run. A LoRA merges into the dequantised values
(:class:`loom.memory.patches.QuantizedWeights`) and the layer quantises the result again in
its own format, as ComfyUI does (round to nearest: its NVFP4 and MXFP8 quantisers take no
stochastic rounding). Unloading puts the file's tensors back."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from loom.memory import mxfp8, nvfp4
from loom.memory.scaled import ScaledLinear


class BlockQuantizedLinear(ScaledLinear):
    """A cast linear layer whose weight is stored block-quantised and padded: it computes with
    the weight :meth:`dequantized` to the compute dtype on the input's device, and reports the
    weight's ``[out, in]`` as its value shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._target_dtype(x)
        weight = self.dequantized(x.device, dtype)
        bias = self.bias
        if bias is not None and (bias.dtype != dtype or bias.device != x.device):
            bias = bias.to(x.device, dtype)
        if x.is_floating_point() and x.dtype != dtype:
            x = x.to(dtype)
        return nn.functional.linear(x, weight, bias)

    def value_shape(self, name: str) -> tuple[int, ...]:
        """The weight's ``[out, in]`` (its stored shape is packed or padded)."""
        if name == "weight":
            return (self.out_features, self.in_features)
        return tuple(getattr(self, name).shape)

    def dequantized(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The weight's values in ``dtype`` on ``device``."""
        raise NotImplementedError


class NvFp4Linear(BlockQuantizedLinear):
    """A cast linear layer whose weight is stored NVFP4 (:mod:`loom.memory.nvfp4`): packed
    ``weight``, blocked float8 ``weight_scale``, float32 ``weight_scale_2``; each forward
    dequantises it to the compute dtype on the input's device, as ComfyUI does off Blackwell
    GPUs (an ``input_scale`` only feeds the fp4 matmul there, and is kept for saving)."""

    weight_scale_2: torch.Tensor
    quant_format: str = nvfp4.NVFP4

    def dequantized(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The weight's values in ``dtype`` on ``device``."""
        packed = self.weight.to(device, non_blocking=device.type != "cpu")
        return nvfp4.dequantize(
            packed,
            self.weight_scale_2,
            self.weight_scale,
            (self.out_features, self.in_features),
            dtype,
        )

    def dequantize(
        self, name: str, tensor: torch.Tensor, scales: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``tensor`` (this layer's packed ``name``, cast to the dtype to dequantise in, which
        keeps its bytes exact) as the values the layer computes with, in that dtype, with the
        stored ``scales`` (by local name) when given, else the layer's own."""
        if name != "weight":
            return tensor
        shape = (self.out_features, self.in_features)
        tensor_scale = self.stored_scale("weight_scale_2", scales)
        block_scales = self.stored_scale("weight_scale", scales)
        return nvfp4.dequantize(tensor, tensor_scale, block_scales, shape, tensor.dtype)

    def requantize(self, name: str, merged: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """``merged`` (the weight's values) quantised to NVFP4 again as ComfyUI does: a new
        per-tensor scale and block scales, values rounded to nearest (ComfyUI's NVFP4
        quantiser ignores the stochastic-rounding ``seed``)."""
        if name != "weight":
            raise KeyError(name)
        quantized = nvfp4.quantize(merged)
        return {
            "weight": quantized.packed,
            "weight_scale": quantized.block_scales,
            "weight_scale_2": quantized.tensor_scale.reshape(self.weight_scale_2.shape),
        }


class MxFp8Linear(BlockQuantizedLinear):
    """A cast linear layer whose weight is stored MXFP8 (:mod:`loom.memory.mxfp8`): float8
    ``weight`` padded to 32, blocked E8M0 ``weight_scale``; each forward dequantises it to the
    compute dtype on the input's device, as ComfyUI does off Blackwell GPUs."""

    quant_format: str = mxfp8.MXFP8

    def dequantized(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The weight's values in ``dtype`` on ``device``."""
        weight = self.weight.to(device, non_blocking=device.type != "cpu")
        return mxfp8.dequantize(
            weight, self.weight_scale, (self.out_features, self.in_features), dtype
        )

    def dequantize(
        self, name: str, tensor: torch.Tensor, scales: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``tensor`` (this layer's stored ``name``, cast to the dtype to dequantise in, which
        holds every float8 value exactly) as the values the layer computes with, with the
        stored ``scales`` (by local name) when given, else the layer's own."""
        if name != "weight":
            return tensor
        shape = (self.out_features, self.in_features)
        block_scales = self.stored_scale("weight_scale", scales)
        return mxfp8.dequantize(tensor, block_scales, shape, tensor.dtype)

    def requantize(self, name: str, merged: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """``merged`` (the weight's values) quantised to MXFP8 again as ComfyUI does: new
        power-of-two block scales, values rounded to nearest (``seed`` is not used)."""
        if name != "weight":
            raise KeyError(name)
        quantized = mxfp8.quantize(merged)
        return {"weight": quantized.values, "weight_scale": quantized.block_scales}
