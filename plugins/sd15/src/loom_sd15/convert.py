"""Checkpoint keys to module keys, declaratively, with exact coverage.

A :class:`Conversion` says which checkpoint prefix feeds which module, which keys under the
prefix are known leftovers to skip (``position_ids``), and how a few legacy tensors are
reshaped. :meth:`Conversion.check` compares the checkpoint's keys with the module's and raises
one :class:`~loom.errors.ModelFileError` listing every missing and unexpected key.
:meth:`Conversion.view` is a lazy mapping (nothing is read until a tensor is asked for);
:meth:`Conversion.to_checkpoint` goes the other way (tests, the demo checkpoint). No I/O and no
device or dtype change happen here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from loom.errors import ModelFileError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

#: Keys an LDM checkpoint carries that no inference module needs (DDPM schedule buffers,
#: EMA copies, training state).
CHECKPOINT_LEFTOVERS = (
    r"model_ema\..*",
    r"(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|"
    r"sqrt_one_minus_alphas_cumprod|log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|"
    r"sqrt_recipm1_alphas_cumprod|posterior_variance|posterior_log_variance_clipped|"
    r"posterior_mean_coef1|posterior_mean_coef2|logvar)",
    r"cond_stage_model\.transformer\.text_model\.embeddings\.position_ids",
    r"cond_stage_model\.transformer\.embeddings\.position_ids",
)

_VAE_ATTN_2D = re.compile(r".*mid\.attn_1\.(q|k|v|proj_out)\.weight")


def _shown(keys: list[str], limit: int = 10) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


@attrs.frozen
class Conversion:
    """Checkpoint ``source_prefix + k`` feeds module key ``target_prefix + k``."""

    name: str
    source_prefix: str
    target_prefix: str = ""
    skip: tuple[str, ...] = ()  # regexes of source keys (after the prefix) to leave out
    reshape_1x1: bool = False  # VAE attention saved as Linear [C, C] -> conv [C, C, 1, 1]

    def __attrs_post_init__(self) -> None:
        for pattern in self.skip:
            re.compile(pattern)

    def _skipped(self, rest: str) -> bool:
        return any(re.fullmatch(p, rest) for p in self.skip)

    def source_keys(self, keys: Iterable[str]) -> list[str]:
        """Checkpoint keys this conversion claims (skipped ones included)."""
        return [k for k in keys if k.startswith(self.source_prefix)]

    def target_key(self, source_key: str) -> str | None:
        rest = source_key[len(self.source_prefix) :]
        return None if self._skipped(rest) else self.target_prefix + rest

    def source_key(self, target_key: str) -> str:
        if not target_key.startswith(self.target_prefix):
            raise KeyError(target_key)
        return self.source_prefix + target_key[len(self.target_prefix) :]

    def check(self, checkpoint_keys: Iterable[str], module_keys: Iterable[str], file: str) -> None:
        """Raise one error naming every missing and unexpected key, if any."""
        mapped = {t for k in self.source_keys(checkpoint_keys) if (t := self.target_key(k))}
        expected = set(module_keys)
        missing = sorted(self.source_key(k) for k in expected - mapped)
        unexpected = sorted(self.source_key(k) for k in mapped - expected)
        if not missing and not unexpected:
            return
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_shown(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_shown(unexpected)}")
        raise ModelFileError(
            f"{file}: the {self.name} weights do not match the architecture read from the "
            f"file; " + "; ".join(parts),
            hint="the file may be truncated, merged badly, or a variant this plugin does not "
            "support",
        )

    def view(self, state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
        """Module-keyed lazy view of ``state_dict``."""
        return _View(self, state_dict)

    def to_checkpoint(self, module_state: Mapping[str, Any]) -> dict[str, Any]:
        """Module state dict -> checkpoint-keyed dict (the reverse mapping)."""
        return {self.source_key(k): v for k, v in module_state.items()}


class _View(Mapping[str, Any]):
    def __init__(self, conversion: Conversion, source: Mapping[str, Any]) -> None:
        self.conversion = conversion
        self.source = source
        self._keys = [
            t for k in conversion.source_keys(source) if (t := conversion.target_key(k)) is not None
        ]
        self._set = set(self._keys)

    def __getitem__(self, key: str) -> Any:
        if key not in self._set:
            raise KeyError(key)
        tensor = self.source[self.conversion.source_key(key)]
        if self.conversion.reshape_1x1 and tensor.ndim == 2 and _VAE_ATTN_2D.fullmatch(key):
            tensor = tensor[:, :, None, None]
        return tensor

    def __contains__(self, key: object) -> bool:
        return key in self._set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def unet_conversion(prefix: str = UNET_PREFIX) -> Conversion:
    return Conversion("diffusion model", prefix)


def vae_conversion(prefix: str = VAE_PREFIX) -> Conversion:
    return Conversion("VAE", prefix, reshape_1x1=True)


def clip_conversion(
    prefix: str, module_has_text_model: bool, source_has_text_model: bool
) -> Conversion:
    """CLIP-L: checkpoint ``...transformer.text_model.*`` (or the older layout without
    ``text_model.``) onto transformers' ``CLIPTextModel`` as installed."""
    source = prefix + ("text_model." if source_has_text_model else "")
    target = "text_model." if module_has_text_model else ""
    return Conversion("text encoder", source, target, skip=(r"embeddings\.position_ids",))


def leftover_keys(keys: Iterable[str], conversions: Iterable[Conversion]) -> list[str]:
    """Checkpoint keys no conversion claims and no known leftover pattern matches."""
    claimed_prefixes = tuple(c.source_prefix for c in conversions)
    return sorted(
        k
        for k in keys
        if not k.startswith(claimed_prefixes)
        and not any(re.fullmatch(p, k) for p in CHECKPOINT_LEFTOVERS)
    )
