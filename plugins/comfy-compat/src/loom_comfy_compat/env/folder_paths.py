"""ComfyUI's ``folder_paths`` module, backed by the Loom runtime (loom-comfy-compat)."""

from loom_comfy_compat import model_paths as _impl
from loom_comfy_compat.missing import missing as _missing
from loom_comfy_compat.model_paths import (
    add_model_folder_path,
    annotated_filepath,
    exists_annotated_filepath,
    get_annotated_filepath,
    get_directory_by_type,
    get_filename_list,
    get_folder_paths,
    get_full_path,
    get_full_path_or_raise,
    get_input_directory,
    get_output_directory,
    get_save_image_path,
    get_temp_directory,
    get_user_directory,
    supported_pt_extensions,
)


def __getattr__(name):
    if name == "folder_names_and_paths":
        return _impl._ensure_bound_dict()
    try:
        return _impl.dynamic_attribute(name)
    except KeyError:
        pass
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    return _missing(__name__, name)


__all__ = [
    "add_model_folder_path",
    "annotated_filepath",
    "exists_annotated_filepath",
    "get_annotated_filepath",
    "get_directory_by_type",
    "get_filename_list",
    "get_folder_paths",
    "get_full_path",
    "get_full_path_or_raise",
    "get_input_directory",
    "get_output_directory",
    "get_save_image_path",
    "get_temp_directory",
    "get_user_directory",
    "supported_pt_extensions",
]
