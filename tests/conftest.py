"""Shared by every test folder: tests/ on ``sys.path`` (for :mod:`device_params`), the
``no_tf32`` fixture, and where tokenizer files come from.

No test reads files from outside the repository unless given explicitly: the Hugging Face
cache in the home directory is hidden (``HF_HOME`` points at an empty folder, offline) and
``LOOM_TOKENIZERS_PATH`` from the caller's shell is dropped, so a tokenizer is found only
where a test puts it. Tests that need the real CLIP-L or T5 files take them from the
``shared_tokenizers`` fixture (``../shared/data/tokenizers`` beside the repository, or
``$LOOM_TEST_TOKENIZERS``); every other test uses the tiny tokenizer ``loom demo`` generates
(``demo_tokenizers``). Fixtures of one plugin's tests live in that folder's conftest.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.append(HERE)

from device_params import ieee_fp32  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Overrides where the real tokenizer files are (a checkout without ``../shared`` beside it).
TOKENIZERS_ENV = "LOOM_TEST_TOKENIZERS"
#: The files each real tokenizer folder must hold.
REAL_TOKENIZER_FILES = {
    "clip_l": ("vocab.json", "merges.txt"),
    "t5xxl": ("tokenizer.json",),
}


def pytest_configure(config: pytest.Config) -> None:
    # Before any test imports transformers/huggingface_hub: both read these at import.
    hf_home = tempfile.mkdtemp(prefix="loom-tests-hf-home-")
    config.add_cleanup(lambda: _remove_tree(hf_home))
    os.environ["HF_HOME"] = hf_home
    os.environ["HF_HUB_CACHE"] = os.path.join(hf_home, "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("LOOM_TOKENIZERS_PATH", None)


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """float32 convolutions and matmuls without TF32 on CUDA for the test (restored after)."""
    with ieee_fp32():
        yield


@pytest.fixture(scope="session")
def shared_tokenizers() -> Path:
    """The real tokenizer files: a folder holding ``clip_l/`` (vocab.json, merges.txt) and
    ``t5xxl/`` (tokenizer.json).

    ``$LOOM_TEST_TOKENIZERS`` if set, else ``../shared/data/tokenizers`` beside the
    repository. When they are missing the test fails under CI (``CI`` set) and is skipped
    with the reason elsewhere: real vocabularies are never looked for anywhere else.
    """
    explicit = os.environ.get(TOKENIZERS_ENV)
    folder = Path(explicit) if explicit else REPO.parent / "shared" / "data" / "tokenizers"
    missing = [
        str(folder / name / file)
        for name, files in REAL_TOKENIZER_FILES.items()
        for file in files
        if not (folder / name / file).is_file()
    ]
    if missing:
        message = (
            f"REAL TOKENIZER FILES MISSING: {', '.join(missing)}. Put the shared data beside "
            f"the repository ({REPO.parent / 'shared' / 'data'}) or set {TOKENIZERS_ENV} to a "
            "folder holding clip_l/ and t5xxl/."
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def demo_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizers folder whose ``clip_l/`` holds the tiny BPE tokenizer ``loom demo``
    generates (not CLIP-L's vocabulary), for tests where the words do not matter."""
    from loom_sd15.demo import write_demo_tokenizer

    folder = tmp_path_factory.mktemp("demo-tokenizers")
    write_demo_tokenizer(folder / "clip_l")
    return folder
