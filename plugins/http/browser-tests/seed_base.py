"""Fill a fresh ``loom serve`` base directory with empty, named placeholder files.

``widgets.mjs`` gives every combo its last option; a model combo with no files has no
value at all, so every standard model folder gets two names (``a``, ``b``; folder kinds get folders) and ``input/``
two images and two ``.latent`` files. Nothing is ever loaded from them.

    python seed_base.py BASE_DIRECTORY
"""

from __future__ import annotations

import sys
from pathlib import Path

from loom.folders import STANDARD_KINDS


def seed(base: Path) -> None:
    """Two placeholder entries in each standard model folder and in ``input/``."""
    for kind in STANDARD_KINDS:
        folder = base / "models" / kind.subdirs[0]
        folder.mkdir(parents=True, exist_ok=True)
        for stem in ("a", "b"):
            if "folder" in kind.extensions:
                (folder / stem).mkdir(exist_ok=True)
                (folder / stem / "model_index.json").write_text("{}")  # a diffusers pipeline
            elif "" in kind.extensions:
                (folder / stem).touch()
            else:
                suffix = (
                    ".safetensors" if ".safetensors" in kind.extensions else min(kind.extensions)
                )
                (folder / f"{stem}{suffix}").touch()
    inputs = base / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.png", "a.latent", "b.latent"):
        (inputs / name).touch()


if __name__ == "__main__":
    seed(Path(sys.argv[1]))
