"""The template browser (/templates/...) and the pinned web-UI extra."""

from __future__ import annotations

import json
import sys
from importlib import metadata

import pytest
from loom_http.routes import templates
from loom_http.routes.nodes_models import REQUIRED_FRONTEND_VERSION


@pytest.fixture
def no_template_packages(monkeypatch):
    monkeypatch.setattr(templates, "TEMPLATE_PACKAGES", ("loom_test_no_such_templates",))
    templates.template_dirs.cache_clear()
    yield
    templates.template_dirs.cache_clear()


@pytest.fixture
def template_package(tmp_path, monkeypatch):
    """An installed package laid out as ComfyUI's template package is."""
    folder = tmp_path / "site" / "loom_test_templates" / "templates"
    folder.mkdir(parents=True)
    (folder.parent / "__init__.py").write_text("")
    index = [{"moduleName": "default", "title": "Basics", "templates": [{"name": "t2i"}]}]
    (folder / "index.json").write_text(json.dumps(index))
    (folder / "t2i-1.webp").write_bytes(b"RIFF-webp")
    (tmp_path / "site" / "secret.txt").write_text("no")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(templates, "TEMPLATE_PACKAGES", ("loom_test_templates",))
    templates.template_dirs.cache_clear()
    yield index
    templates.template_dirs.cache_clear()
    sys.modules.pop("loom_test_templates", None)


@pytest.mark.asyncio
async def test_template_index_is_empty_without_the_template_package(client, no_template_packages):
    response = await client.get("/templates/index.json")
    assert response.status == 200 and await response.json() == []
    assert (await client.get("/templates/t2i.json")).status == 404


@pytest.mark.asyncio
async def test_templates_are_served_from_the_installed_package(client, template_package):
    response = await client.get("/templates/index.json")
    assert response.status == 200 and await response.json() == template_package
    thumbnail = await client.get("/templates/t2i-1.webp")
    assert thumbnail.status == 200 and await thumbnail.read() == b"RIFF-webp"
    assert (await client.get("/templates/..%2Fsecret.txt")).status == 404


def test_the_ui_extra_pins_the_frontend_system_stats_requires():
    requirements = metadata.requires("loom-http") or []
    pins = [r for r in requirements if r.startswith("comfyui-frontend-package")]
    assert pins and pins[0].split(";")[0].strip() == (
        f"comfyui-frontend-package=={REQUIRED_FRONTEND_VERSION}"
    )
