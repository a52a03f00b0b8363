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
    # asked with the sampled model once it is loaded (a control-LoRA builds from its weights)
    assert boxes.asked_for and all(m is model and loaded for m, loaded in boxes.asked_for)
