"""The samplers' one integration point with loom.memory: loading and batch splitting."""

from __future__ import annotations

import types

import torch
from loom_samplers.model_interface import batch_fits, prepare_model

from loom.memory import MemoryManager, ModelHandle
from loom.memory.devices import simulated_device


class Handle(ModelHandle):
    def memory_required(self, shape):
        return 4 * int(torch.Size(shape).numel()) * 100


def make(budget_bytes):
    manager = MemoryManager(simulated_device(budget_bytes), budget_bytes=budget_bytes)
    ctx = types.SimpleNamespace(runtime=types.SimpleNamespace(memory=manager))
    return manager, ctx, Handle(torch.nn.Linear(64, 64))


def test_prepare_model_loads_the_handle_with_room_for_activations():
    manager, ctx, model = make(10 * 1024**2)
    prepare_model(ctx, model, (1, 4, 8, 8))
    assert manager.loaded_handles() == [model]


def test_batch_fits_follows_the_budget():
    _, ctx, model = make(10 * 1024**2)
    assert batch_fits(ctx, model, (2, 4, 8, 8))  # 200 KiB needed
    assert not batch_fits(ctx, model, (2, 4, 128, 128))  # 50 MiB needed


def test_plain_models_and_bare_contexts_are_used_as_they_are():
    model = types.SimpleNamespace(load_device="cpu")
    assert prepare_model(types.SimpleNamespace(), model, (1, 4, 8, 8)) == "cpu"
    assert batch_fits(types.SimpleNamespace(), model, (64, 4, 128, 128))


class Boxes:
    """A conditioning option that needs a model of its own (as GLIGEN's boxes do)."""

    def __init__(self, handle):
        self.handle = handle
        self.asked_for = []

    def models(self, model):
        self.asked_for.append((model, model.is_loaded))
        return [self.handle]


def test_models_any_conditioning_option_needs_load_with_the_model():
    from loom.types import NeedsModels

    manager, ctx, model = make(10 * 1024**2)
    extra = Handle(torch.nn.Linear(8, 8), name="extra")
    boxes = Boxes(extra)
    assert isinstance(boxes, NeedsModels)
    entry = [torch.zeros(1, 2, 4), {"gligen": boxes, "area": (1, 1, 0, 0), "strength": 1.0}]
    conds = {"positive": [entry, entry], "negative": [[torch.zeros(1, 2, 4), {"gligen": boxes}]]}
    prepare_model(ctx, model, (1, 4, 8, 8), conds)
    assert set(manager.loaded_handles()) == {model, extra}
    # asked before the load (one load for all) and again with the model loaded
    assert [m for m, _ in boxes.asked_for] == [model] * len(boxes.asked_for)
    assert (model, False) in boxes.asked_for and (model, True) in boxes.asked_for


class LateBoxes(Boxes):
    """A value whose handle is built from the loaded model (as a control-LoRA's is)."""

    def models(self, model):
        self.asked_for.append((model, model.is_loaded))
        return [self.handle] if model.is_loaded else []


def counting_places(manager, monkeypatch) -> list[str]:
    """The names of the handles the manager places (loads), in order."""
    placed = []
    place = manager._place

    def spy(handle, extra_memory):
        placed.append(handle.name)
        return place(handle, extra_memory)

    monkeypatch.setattr(manager, "_place", spy)
    return placed


def test_a_tight_budget_loads_model_and_extras_once_without_evicting_an_extra(monkeypatch):
    """A ControlNet left resident by the last prompt is not evicted to make room for the
    model and then loaded again: one load places the model beside it."""
    from loom.types import NeedsModels

    shape = (1, 4, 8, 8)
    model = Handle(torch.nn.Linear(64, 64), name="model")
    extra = Handle(torch.nn.Linear(32, 32), name="controlnet")
    activations = model.memory_required(shape)
    budget = model.size_bytes() + extra.size_bytes() + activations - 1024  # not all fits
    manager = MemoryManager(simulated_device(budget), budget_bytes=budget)
    ctx = types.SimpleNamespace(runtime=types.SimpleNamespace(memory=manager))
    manager.load([extra])  # resident from the last prompt
    placed = counting_places(manager, monkeypatch)
    boxes = Boxes(extra)
    assert isinstance(boxes, NeedsModels)
    conds = {"positive": [[torch.zeros(1, 2, 4), {"control": boxes}]]}
    prepare_model(ctx, model, shape, conds)
    assert list(manager.evictions) == []
    assert placed == ["model"]
    assert set(manager.loaded_handles()) == {model, extra}


def test_a_handle_built_from_the_loaded_model_loads_after_it(monkeypatch):
    manager, ctx, model = make(10 * 1024**2)
    early, late = (
        Handle(torch.nn.Linear(8, 8), name="early"),
        Handle(torch.nn.Linear(8, 8), name="late"),
    )
    placed = counting_places(manager, monkeypatch)
    late_boxes = LateBoxes(late)
    conds = {"positive": [[torch.zeros(1, 2, 4), {"gligen": Boxes(early), "control": late_boxes}]]}
    prepare_model(ctx, model, (1, 4, 8, 8), conds)
    assert set(manager.loaded_handles()) == {model, early, late}
    assert placed == [model.name, "early", "late"]  # each placed once
    assert (model, True) in late_boxes.asked_for
    assert list(manager.evictions) == []
