"""``folder_paths``: ComfyUI's folder registry, backed by the bound runtime's settings.

``folder_names_and_paths`` (``key -> ([directories], {extensions})``) is a real, writable
dict: it is refilled from the runtime's model folders (core's standard kinds, the extra
model paths files, and kinds plugins registered once the registry exists) when the
environment binds, and packs may add kinds to it or paths to a kind. Listings reuse
:class:`loom.folders.ModelFolders`, so names are ``/``-separated, sorted and recursive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loom.folders import ALIASES, MODEL_EXTENSIONS, STANDARD_KINDS, FolderKind, ModelFolders
from loom.frontend import get_save_path, split_annotation
from loom_comfy_compat.environment import ENV

supported_pt_extensions: set[str] = set(MODEL_EXTENSIONS)

#: ``key -> ([directories], {extensions})``, as ComfyUI's module-level dict.
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
_bound_to: list[Any] = [None]
_registry_kinds_added: set[str] = set()


def _settings() -> Any:
    return ENV.require_runtime("folder_paths").settings


def _sync() -> None:
    """Refill the dict for a newly bound runtime; add kinds plugins registered since."""
    runtime = ENV.require_runtime("folder_paths")
    if _bound_to[0] is not runtime:
        _bound_to[0] = runtime
        folder_names_and_paths.clear()
        _registry_kinds_added.clear()
        settings = runtime.settings
        kinds = {kind.key: kind for kind in STANDARD_KINDS}
        _add_kinds(
            ModelFolders(settings.models_dir, settings.output_dir, kinds, runtime.extra_paths)
        )
        folder_names_and_paths["custom_nodes"] = (
            [str(p) for p in runtime.custom_node_dirs()],
            set(),
        )
    registry = ENV.registry_if_ready()
    if registry is not None:  # the kinds plugins registered: the runtime's folders know them
        new = set(registry.folder_kinds) - set(folder_names_and_paths) - _registry_kinds_added
        if new:
            _registry_kinds_added.update(new)
            _add_kinds(runtime.folders, only=new)


def _add_kinds(folders: ModelFolders, only: set[str] | None = None) -> None:
    for key in folders.keys():
        if only is not None and key not in only:
            continue
        kind = folders.kinds[key]
        folder_names_and_paths[key] = (
            [str(p) for p in folders.paths(key)],
            set(kind.extensions),
        )


def _key(folder_name: str) -> str:
    _sync()
    return (
        folder_name
        if folder_name in folder_names_and_paths
        else ALIASES.get(folder_name, folder_name)
    )


def _folders(folder_name: str) -> tuple[str, ModelFolders]:
    key = _key(folder_name)
    if key not in folder_names_and_paths:
        raise KeyError(f"folder_paths: no model folder kind {folder_name!r}")
    paths, extensions = folder_names_and_paths[key]
    kind = FolderKind(key, tuple(paths), frozenset(extensions))
    # Absolute sub-directories replace the models dir when joined, so this lists exactly ``paths``.
    return key, ModelFolders(Path("/"), Path("/"), {key: kind})


def get_folder_paths(folder_name: str) -> list[str]:
    return list(folder_names_and_paths[_key(folder_name)][0])


def get_filename_list(folder_name: str) -> list[str]:
    key, folders = _folders(folder_name)
    return folders.filenames(key)


def get_full_path(folder_name: str, filename: str) -> str | None:
    key, folders = _folders(folder_name)
    found = folders.find(key, filename.replace("\\", "/"))
    return str(found) if found is not None else None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    found = get_full_path(folder_name, filename)
    if found is None:
        raise FileNotFoundError(
            f"Model in folder '{folder_name}' with filename '{filename}' not found "
            f"(searched {', '.join(get_folder_paths(folder_name))})."
        )
    return found


def add_model_folder_path(
    folder_name: str, full_folder_path: str, is_default: bool = False
) -> None:
    """Add a directory to a kind (creating the kind); ``is_default`` puts it first."""
    key = _key(folder_name)
    paths = folder_names_and_paths.setdefault(key, ([], set()))[0]
    path = str(full_folder_path)
    if path in paths:
        paths.remove(path)
    if is_default:
        paths.insert(0, path)
    else:
        paths.append(path)


def get_output_directory() -> str:
    return str(_settings().output_dir)


def get_input_directory() -> str:
    return str(_settings().input_dir)


def get_temp_directory() -> str:
    return str(_settings().temp_dir)


def get_user_directory() -> str:
    return str(_settings().user_dir)


def get_directory_by_type(type_name: str) -> str | None:
    try:
        return str(_settings().directory(type_name))
    except ValueError:
        return None


def annotated_filepath(name: str) -> tuple[str, str | None]:
    filename, kind = split_annotation(name)
    if filename == name:
        return name, None
    return filename, get_directory_by_type(kind)


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    filename, base = annotated_filepath(name)
    if base is None:
        base = default_dir if default_dir is not None else get_input_directory()
    return os.path.join(base, filename)


def exists_annotated_filepath(name: str) -> bool:
    return os.path.exists(get_annotated_filepath(name))


def get_save_image_path(
    filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0
) -> tuple[str, str, int, str, str]:
    """``(full_output_folder, filename, counter, subfolder, filename_prefix)``."""
    target = get_save_path(filename_prefix, Path(output_dir), image_width, image_height)
    return (
        str(target.folder),
        target.filename,
        target.counter,
        target.subfolder,
        target.filename_prefix,
    )


def dynamic_attribute(name: str) -> Any:
    """Module attributes that follow the bound runtime (``base_path``, ``models_dir``, ...)."""
    values = {
        "base_path": lambda: str(_settings().base_directory),
        "models_dir": lambda: str(_settings().models_dir),
        "output_directory": get_output_directory,
        "input_directory": get_input_directory,
        "temp_directory": get_temp_directory,
        "user_directory": get_user_directory,
    }
    if name in values:
        return values[name]()
    raise KeyError(name)


def _ensure_bound_dict() -> dict[str, tuple[list[str], set[str]]]:
    _sync()
    return folder_names_and_paths
