"""Model folders laid out like ComfyUI's, plus ``extra_model_paths.yaml``.

A :class:`FolderKind` says what a folder key holds (``checkpoints``: ``models/checkpoints``,
files ending ``.safetensors`` ...). :class:`ModelFolders` resolves keys to directories for
one :class:`~loom.settings.Settings`: first the ``is_default`` entries of extra path configs,
then the base directory's, then the other extra paths; and lists files recursively with
``/``-separated relative names, as ComfyUI's ``folder_paths`` does. This module is also the
built-in plugin that declares ComfyUI's standard folder kinds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import yaml

from loom.errors import LoomError, ModelFileError
from loom.hookspecs import hookimpl
from loom.paths import model_relative_path

if TYPE_CHECKING:
    from loom.registration import RegisterFolderKind

log = logging.getLogger(__name__)

MODEL_EXTENSIONS = frozenset(
    {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
)

#: Legacy keys ComfyUI still accepts.
ALIASES = {"clip": "text_encoders", "unet": "diffusion_models"}


@attrs.frozen
class FolderKind:
    """A model folder key, its default sub-directories of ``models/`` and its extensions."""

    key: str
    subdirs: tuple[str, ...]
    extensions: frozenset[str] = MODEL_EXTENSIONS
    #: Extra sub-directories of the *output* directory (ComfyUI saves merged models there).
    output_subdirs: tuple[str, ...] = ()

    def merged(self, other: FolderKind) -> FolderKind:
        def union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return a + tuple(x for x in b if x not in a)

        return FolderKind(
            self.key,
            union(self.subdirs, other.subdirs),
            self.extensions | other.extensions,
            union(self.output_subdirs, other.output_subdirs),
        )


STANDARD_KINDS: tuple[FolderKind, ...] = (
    FolderKind("checkpoints", ("checkpoints",), output_subdirs=("checkpoints",)),
    FolderKind("configs", ("configs",), frozenset({".yaml"})),
    FolderKind("loras", ("loras",), output_subdirs=("loras",)),
    FolderKind("vae", ("vae",), output_subdirs=("vae",)),
    FolderKind("text_encoders", ("text_encoders", "clip"), output_subdirs=("clip",)),
    FolderKind(
        "diffusion_models", ("unet", "diffusion_models"), output_subdirs=("diffusion_models",)
    ),
    FolderKind("clip_vision", ("clip_vision",)),
    FolderKind("style_models", ("style_models",)),
    FolderKind("embeddings", ("embeddings",)),
    FolderKind("diffusers", ("diffusers",), frozenset({"folder"})),
    FolderKind("vae_approx", ("vae_approx",)),
    FolderKind("controlnet", ("controlnet", "t2i_adapter")),
    FolderKind("gligen", ("gligen",)),
    FolderKind("upscale_models", ("upscale_models",)),
    FolderKind("latent_upscale_models", ("latent_upscale_models",)),
    FolderKind("hypernetworks", ("hypernetworks",)),
    FolderKind("photomaker", ("photomaker",)),
    FolderKind("classifiers", ("classifiers",), frozenset({""})),
    FolderKind("model_patches", ("model_patches",)),
    FolderKind("audio_encoders", ("audio_encoders",)),
    FolderKind("tokenizers", ("tokenizers",), frozenset({"folder"})),
)


@hookimpl
def register_model_folders(register: RegisterFolderKind) -> None:
    for kind in STANDARD_KINDS:
        register(kind)


class ExtraPathsError(LoomError):
    """An extra_model_paths.yaml file could not be read."""


@attrs.frozen
class ExtraPaths:
    """Directories one extra_model_paths config adds, per folder key."""

    default: dict[str, list[Path]]
    other: dict[str, list[Path]]

    def custom_nodes(self) -> list[Path]:
        """The config's ``custom_nodes`` directories, ``is_default`` sections first."""
        return self.default.get("custom_nodes", []) + self.other.get("custom_nodes", [])


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's problem and where, without its excerpt of the parsed string."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1} column {mark.column + 1}" if mark else problem


def read_extra_model_paths(config: Path) -> ExtraPaths:
    """Parse ComfyUI's extra_model_paths.yaml layout.

    Top-level sections (any name) hold an optional ``base_path`` (relative to the yaml
    file; ``~`` and environment variables expanded), an optional ``is_default``, and
    ``folder_key: path`` entries whose value may hold several newline-separated paths.
    """
    try:
        text = config.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExtraPathsError(
            f"cannot read extra model paths config {config}: {exc.strerror or exc}"
        ) from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ExtraPathsError(
            f"extra model paths config {config} is not valid YAML: {_yaml_problem(exc)}"
        ) from exc
    if not isinstance(data, dict):
        raise ExtraPathsError(f"{config}: expected sections of folder_key: path entries")
    result = ExtraPaths({}, {})
    for section_name, section in data.items():
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ExtraPathsError(f"{config}: section {section_name!r} must be a mapping")
        base = section.get("base_path")
        base_path = _expand(str(base), config.parent) if base else None
        target = result.default if section.get("is_default") else result.other
        for key, value in section.items():
            if key in ("base_path", "is_default") or value is None:
                continue
            key = ALIASES.get(key, key)
            for line in str(value).splitlines():
                line = line.strip()
                if not line:
                    continue
                path = _expand(line, base_path or config.parent)
                target.setdefault(key, []).append(path)
    return result


def _expand(value: str, relative_to: Path) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    return path if path.is_absolute() else (relative_to / path)


class ModelFolders:
    """Resolves folder keys to directories and lists the model files in them."""

    def __init__(
        self,
        models_dir: Path,
        output_dir: Path,
        kinds: dict[str, FolderKind],
        extras: Iterable[ExtraPaths] = (),
    ) -> None:
        self.kinds = kinds
        self._paths: dict[str, list[Path]] = {}
        extras = list(extras)
        for key, kind in kinds.items():
            paths: list[Path] = []
            for extra in extras:
                paths.extend(extra.default.get(key, []))
            paths.extend(models_dir / sub for sub in kind.subdirs)
            paths.extend(output_dir / sub for sub in kind.output_subdirs)
            for extra in extras:
                paths.extend(extra.other.get(key, []))
            self._paths[key] = _unique(paths)
        self.custom_nodes_paths = _unique([p for extra in extras for p in extra.custom_nodes()])

    @classmethod
    def from_configs(
        cls,
        models_dir: Path,
        output_dir: Path,
        kinds: dict[str, FolderKind],
        configs: Iterable[Path],
    ) -> ModelFolders:
        """Folders with the extra paths of these ``extra_model_paths.yaml`` files."""
        return cls(
            models_dir, output_dir, kinds, [read_extra_model_paths(Path(c)) for c in configs]
        )

    def keys(self) -> list[str]:
        return list(self.kinds)

    def _key(self, key: str) -> str:
        key = ALIASES.get(key, key)
        if key not in self.kinds:
            raise KeyError(key)
        return key

    def paths(self, key: str) -> list[Path]:
        """Directories searched for ``key`` (aliases ``clip``/``unet`` accepted), in order."""
        return list(self._paths[self._key(key)])

    def filenames(self, key: str) -> list[str]:
        """Model files under ``key``'s directories: sorted, relative, ``/``-separated.

        Symlinked files and folders are followed (each real folder walked once, so a link
        loop ends); every name listed is one :meth:`find` loads.
        """
        kind = self.kinds[self._key(key)]
        found: set[str] = set()
        for root in self._paths[kind.key]:
            if not root.is_dir():
                continue
            if "folder" in kind.extensions:
                found.update(p.name for p in root.iterdir() if p.is_dir())
                continue
            walked: set[str] = set()
            for dirpath, dirnames, files in os.walk(root, followlinks=True):
                real = os.path.realpath(dirpath)
                if real in walked:
                    dirnames.clear()
                    continue
                walked.add(real)
                dirnames.sort()
                rel_dir = Path(dirpath).relative_to(root)
                for name in files:
                    suffix_ok = (
                        not kind.extensions
                        or "" in kind.extensions
                        or Path(name).suffix.lower() in kind.extensions
                    )
                    if suffix_ok and os.path.exists(os.path.join(dirpath, name)):
                        found.add((rel_dir / name).as_posix())
        return sorted(found)

    def find(self, key: str, filename: str) -> Path | None:
        """The file a combo value names in ``key``'s directories; None if absent.

        The name must stay inside the folder (:func:`loom.paths.model_relative_path`);
        symlinks placed in the folder are followed, as :meth:`filenames` lists them.
        """
        relative = model_relative_path(filename)
        if relative is None:
            return None
        for root in self._paths[self._key(key)]:
            candidate = root / relative
            if candidate.exists():
                return candidate
        return None

    def require(self, key: str, filename: str) -> Path:
        """:meth:`find`, for a loader node: the file, or ComfyUI's "not found" message with
        the directories searched as the hint.

        :raises ModelFileError: no such file in any of ``key``'s directories.
        """
        path = self.find(key, filename)
        if path is None:
            searched = ", ".join(str(p) for p in self.paths(key)) or "(no directories)"
            raise ModelFileError(
                f"Model in folder '{key}' with filename '{filename}' not found.",
                hint=f"put the file in one of: {searched}",
            )
        return path


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for path in paths:
        seen.setdefault(path, None)
    return list(seen)


@attrs.frozen
class ModelFileChoices:
    """A live combo source: the files in model folder ``key`` (empty without folders).

    Validation asks :meth:`searched` for the directories behind an empty list, so
    ``ckpt_name 'x.safetensors' not in []`` says where Loom looked.
    """

    key: str

    def __call__(self, folders: ModelFolders | None) -> list[str]:
        return folders.filenames(self.key) if folders is not None else []

    def searched(self, folders: ModelFolders | None) -> list[Path]:
        """The directories of model folder ``key``, in search order."""
        if folders is None:
            return []
        try:
            return folders.paths(self.key)
        except KeyError:
            return []


__all__ = [
    "ALIASES",
    "MODEL_EXTENSIONS",
    "STANDARD_KINDS",
    "ExtraPaths",
    "ExtraPathsError",
    "FolderKind",
    "ModelFileChoices",
    "ModelFolders",
]
