from __future__ import annotations

import json
from pathlib import Path

import pytest
from wf_stub_nodes import build_registry

DATA = Path(__file__).parent / "data"


@pytest.fixture
def registry():
    return build_registry()


@pytest.fixture
def load_workflow():
    def load(name: str) -> dict:
        return json.loads((DATA / name).read_text(encoding="utf-8"))

    return load
