"""``node_helpers`` (loom-comfy-compat): ``pillow`` and ``conditioning_set_values``."""

from loom_comfy_compat.missing import module_getattr


def pillow(fn, arg):
    """Call a PIL function, retrying with truncated images allowed if it fails (as ComfyUI)."""
    from PIL import ImageFile

    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        return fn(arg)
    except (OSError, SyntaxError, ValueError):
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        return fn(arg)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def conditioning_set_values(conditioning, values=None, append=False):
    """A copy of ``conditioning`` with ``values`` set in each entry's options (``append``:
    list values are appended to what is there)."""
    out = []
    for tensor, options in conditioning:
        options = dict(options)
        for key, value in (values or {}).items():
            if append and key in options:
                options[key] = options[key] + value
            else:
                options[key] = value
        out.append([tensor, options])
    return out


__getattr__ = module_getattr(__name__)
__all__ = ["conditioning_set_values", "pillow"]
