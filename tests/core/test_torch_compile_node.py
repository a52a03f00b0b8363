"""TorchCompileModel: the clone's module runs through torch.compile on first use and gives the
eager result; the original handle stays eager; /object_info; bad input names the node."""

from __future__ import annotations

import pytest
import torch

from loom.errors import LoomError
from loom.memory import MemoryManager, ModelHandle, cpu_device, ops
from loom.nodes.builtin.torch_compile import CompiledForward, TorchCompileModel, compiled_clone


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = ops.Linear(8, 16)
        self.b = ops.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.nn.functional.gelu(self.a(x)))


def test_clone_carries_a_lazy_compiled_forward_and_the_original_stays_eager():
    torch.manual_seed(0)
    model = ModelHandle(Tiny(), name="tiny")
    patched = TorchCompileModel(model=model, backend="inductor").run(None)
    assert model.object_patches == {}
    compiled = patched.object_patches["forward"]
    assert isinstance(compiled, CompiledForward) and compiled.backend == "inductor"
    assert compiled.compiled is None  # nothing compiled before the first call


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_forward_runs_through_dynamo_equals_eager_and_reverts_on_unload(backend):
    """The node's path with torch's compiler-free backends (inductor and cudagraphs need a
    C++ toolchain or CUDA, and minutes on a loaded CPU): dynamo captures the forward once."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    module = Tiny()
    model = ModelHandle(module, name="tiny")
    x = torch.randn(3, 8)
    with torch.no_grad():
        eager = module(x)
    patched = compiled_clone(model, backend)
    memory = MemoryManager(cpu_device())
    memory.load([patched])
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        out = module(x)
        again = module(x)
    compiled = patched.object_patches["forward"]
    assert compiled.compiled is not None  # compiled on that first call
    assert counters["stats"]["unique_graphs"] == 1  # captured once, reused
    assert torch.allclose(out, eager, atol=1e-6) and torch.equal(out, again)
    memory.load([model])  # the original handle: the patch is reverted
    assert not isinstance(module.forward, CompiledForward)
    with torch.no_grad():
        assert torch.equal(module(x), eager)


def test_bad_input_names_the_node():
    with pytest.raises(LoomError, match="TorchCompileModel: input model"):
        TorchCompileModel(model=object(), backend="inductor").run(None)
    with pytest.raises(LoomError, match="TorchCompileModel: backend 'tvm'"):
        TorchCompileModel(model=ModelHandle(Tiny()), backend="tvm").run(None)


def test_object_info(tmp_path):
    from loom.nodes.object_info import object_info
    from loom.settings import Settings
    from loom.testing import make_runtime

    runtime = make_runtime(settings=Settings(base_directory=tmp_path, load_custom_nodes=False))
    entry = object_info(runtime.registry, runtime.environment)["TorchCompileModel"]
    assert entry["input"]["required"] == {
        "model": ["MODEL", {}],
        "backend": ["COMBO", {"multiselect": False, "options": ["inductor", "cudagraphs"]}],
    }
    assert (entry["category"], entry["output"]) == ("_for_testing", ["MODEL"])
    assert entry["python_module"] == "comfy_extras.nodes_torch_compile" and entry["experimental"]
