"""UpscaleModelLoader and ImageUpscaleWithModel on tiny Real-ESRGAN files: loading, parity
with the reference module and with one untiled spandrel call, the memory budget, the
out-of-memory fallback, and clear errors for files Loom cannot use."""

from __future__ import annotations

import attrs
import pytest
import torch
from loom_upscale.model import UpscaleModel
from loom_upscale.nodes import ImageUpscaleWithModel, UpscaleModelLoader
from loom_upscale.upscale import upscale
from upscale_reference import image_batch, old_esrgan_keys, tiny_rrdbnet, write_model

from loom.errors import LoomError
from loom.executor.context import InterruptFlag, RunContext
from loom.memory import MemoryManager, simulated_device
from loom.testing import make_context


def load(runtime, name: str) -> UpscaleModel:
    return UpscaleModelLoader(model_name=name).run(make_context(runtime))


def run_upscale(runtime, model: UpscaleModel, image: torch.Tensor, **ctx_fields) -> torch.Tensor:
    ctx = attrs.evolve(make_context(runtime), **ctx_fields) if ctx_fields else make_context(runtime)
    return ImageUpscaleWithModel(upscale_model=model, image=image).run(ctx)


def reference_upscale(net: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(image.movedim(-1, 1)).clamp(0, 1).movedim(1, -1)


def test_loader_detects_the_real_esrgan_layout_and_its_scale(runtime, esrgan_file):
    model = load(runtime, esrgan_file)
    assert (model.architecture, model.scale) == ("ESRGAN", 4)
    assert (model.input_channels, model.output_channels) == (3, 3)


def test_upscale_matches_the_reference_module_and_shape(runtime, esrgan_file, reference):
    image = image_batch(2, 20, 28)
    out = run_upscale(runtime, load(runtime, esrgan_file), image)
    assert out.shape == (2, 80, 112, 3) and out.dtype == torch.float32
    expected = reference_upscale(reference, image)
    assert 0.05 < expected.std() and torch.allclose(out, expected, atol=1e-5)


def test_the_old_esrgan_layout_gives_the_same_model(runtime, models_dir, reference):
    write_model(models_dir, "old.safetensors", old_esrgan_keys(reference.state_dict()))
    image = image_batch(1, 12, 16)
    out = run_upscale(runtime, load(runtime, "old.safetensors"), image)
    assert torch.allclose(out, reference_upscale(reference, image), atol=1e-5)


def test_a_2x_real_esrgan_file_pixel_unshuffles_and_scales_by_2(runtime, models_dir):
    net = tiny_rrdbnet(seed=3, scale=2)
    write_model(models_dir, "x2.sft", net.state_dict())
    model = load(runtime, "x2.sft")
    image = image_batch(1, 12, 20)
    out = run_upscale(runtime, model, image)
    assert model.scale == 2 and out.shape == (1, 24, 40, 3)
    assert torch.allclose(out, reference_upscale(net, image), atol=1e-5)


def test_a_data_parallel_swinir_file_loses_its_module_prefix(runtime, models_dir):
    """SwinIR's released files were saved from DataParallel (``module.layers...``)."""
    from loom_upscale.spandrel_import import import_spandrel

    import_spandrel()
    from spandrel.architectures.SwinIR import SwinIR  # SwinIR's own module, as published

    torch.manual_seed(0)
    net = SwinIR(
        upscale=2,
        img_size=16,
        window_size=4,
        depths=[2],
        embed_dim=12,
        num_heads=[2],
        mlp_ratio=2,
        upsampler="pixelshuffledirect",
    ).eval()
    write_model(
        models_dir, "swinir.safetensors", {f"module.{k}": v for k, v in net.state_dict().items()}
    )
    model = load(runtime, "swinir.safetensors")
    assert (model.architecture, model.scale) == ("SwinIR", 2)
    image = image_batch(1, 16, 16)
    assert torch.allclose(
        run_upscale(runtime, model, image), reference_upscale(net, image), atol=1e-5
    )


def test_an_fp16_file_loads_into_a_float32_model(runtime, models_dir, reference):
    half = {key: value.half() for key, value in reference.state_dict().items()}
    write_model(models_dir, "half.safetensors", half)
    model = load(runtime, "half.safetensors")
    assert {p.dtype for p in model.model.parameters()} == {torch.float32}
    image = image_batch(1, 8, 12)
    out = run_upscale(runtime, model, image)
    assert torch.allclose(out, reference_upscale(reference, image), atol=2e-2)


def test_tiled_result_matches_one_untiled_call_within_the_blend(runtime, esrgan_file):
    """520 pixels wide: two 512-pixel tiles overlapping by 32, as ComfyUI tiles it."""
    model = load(runtime, esrgan_file)
    image = image_batch(1, 8, 520, seed=1)
    events = []
    tiled = run_upscale(runtime, model, image, on_progress=lambda v, t, p: events.append((v, t)))
    assert events == [(1, 2), (2, 2)]
    with torch.inference_mode():
        whole = model(image.movedim(-1, 1)).movedim(1, -1)
    assert tiled.shape == whole.shape == (1, 32, 2080, 3)
    difference = (tiled - whole).abs()
    # the first tile ends at 512 (x4: 2048), the second starts at 488 (x4: 1952): away
    # from the overlap and the cut edges each pixel comes from one tile and is exact
    assert torch.allclose(tiled[:, :, :1900], whole[:, :, :1900], atol=1e-5)
    assert torch.allclose(tiled[:, :, 2060:], whole[:, :, 2060:], atol=1e-5)
    assert difference.max() < 0.02 and difference.mean() < 1e-4  # measured: 0.0065, 8e-6


def test_a_small_budget_starts_with_smaller_tiles(runtime, esrgan_file):
    model = load(runtime, esrgan_file)
    image = image_batch(1, 8, 260, seed=2)
    # 1 GB: 256-pixel tiles (1.2 GB of activations at 4x) do not fit, 128 (0.3 GB) do
    memory = MemoryManager(simulated_device(2**30))
    ticks = []
    out = upscale(model, image, memory, progress=lambda done, total: ticks.append(total))
    assert ticks == [3, 3, 3]  # ceil((260 - 32) / (128 - 32)) tiles
    assert model.handle.compute_target.dtype == torch.float32
    assert [m.name for m in memory.accounting().models] == ["upscale:tiny-x4.safetensors"]
    with torch.inference_mode():
        whole = model(image.movedim(-1, 1)).movedim(1, -1)
    assert (out - whole).abs().mean() < 5e-3


@attrs.define
class RunsOutOfMemory:
    """A descriptor stand-in that raises torch's out-of-memory error for tiles over ``limit``."""

    inner: object
    limit: int
    sizes: list[int] = attrs.Factory(list)

    def __call__(self, piece: torch.Tensor) -> torch.Tensor:
        self.sizes.append(max(piece.shape[2:]))
        if max(piece.shape[2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(piece)


def test_out_of_memory_halves_the_tile_like_comfyui(runtime, esrgan_file):
    model = load(runtime, esrgan_file)
    flaky = RunsOutOfMemory(model.descriptor, limit=128)
    image = image_batch(1, 8, 280, seed=4)
    out = run_upscale(runtime, attrs.evolve(model, descriptor=flaky), image)
    # 512: the whole 280-pixel image in one call; 256: its first tile; then 128 throughout
    assert flaky.sizes[:2] == [280, 256] and set(flaky.sizes[2:]) <= {128, 88}
    memory = MemoryManager(simulated_device(2**30))  # starts at 128 directly
    assert torch.allclose(out, upscale(model, image, memory), atol=1e-6)


def test_out_of_memory_below_128_pixel_tiles_is_a_clear_error(runtime, esrgan_file):
    model = load(runtime, esrgan_file)
    flaky = attrs.evolve(model, descriptor=RunsOutOfMemory(model.descriptor, limit=64))
    with pytest.raises(LoomError, match=r"ImageUpscaleWithModel: out of device memory") as info:
        run_upscale(runtime, flaky, image_batch(1, 8, 300))
    assert "tiny-x4.safetensors" in str(info.value) and "128-pixel tiles" in str(info.value)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_interrupting_stops_between_tiles(runtime, esrgan_file):
    model = load(runtime, esrgan_file)
    flag = InterruptFlag()
    flag.set()
    ctx = RunContext("1", "p", {}, {}, runtime, flag)
    with pytest.raises(LoomError, match="interrupted"):
        ImageUpscaleWithModel(upscale_model=model, image=image_batch(1, 8, 8)).run(ctx)


# --- files Loom cannot use ----------------------------------------------------------


def test_unknown_architecture_names_node_input_and_file(runtime, models_dir):
    write_model(models_dir, "mystery.safetensors", {"encoder.weight": torch.zeros(4, 4)})
    with pytest.raises(LoomError) as info:
        load(runtime, "mystery.safetensors")
    message = str(info.value)
    assert message.startswith(
        "UpscaleModelLoader, input 'model_name', file 'mystery.safetensors': "
        "not an upscale model of an architecture spandrel knows (keys: encoder.weight)"
    )


def test_pickle_files_are_refused_without_being_read(runtime, models_dir):
    (models_dir / "RealESRGAN_x4plus.pth").write_bytes(b"\x80\x02not read")
    with pytest.raises(LoomError, match="never unpickles") as info:
        load(runtime, "RealESRGAN_x4plus.pth")
    assert "input 'model_name', file 'RealESRGAN_x4plus.pth'" in str(info.value)


def test_a_pickle_named_safetensors_is_refused(runtime, models_dir):
    (models_dir / "fake.safetensors").write_bytes(b"\x80\x02" + b"\x00" * 64)
    with pytest.raises(LoomError, match="not a safetensors file") as info:
        load(runtime, "fake.safetensors")
    assert str(info.value).startswith("UpscaleModelLoader, input 'model_name', file 'fake.")


def test_weights_that_do_not_fit_their_architecture_are_a_clear_error(
    runtime, models_dir, reference
):
    state = dict(reference.state_dict())
    del state["body.0.rdb2.conv3.weight"]
    write_model(models_dir, "broken.safetensors", state)
    with pytest.raises(LoomError, match="do not fit the architecture") as info:
        load(runtime, "broken.safetensors")
    assert "file 'broken.safetensors'" in str(info.value)


def test_missing_file_lists_the_folders_searched(runtime, models_dir):
    with pytest.raises(LoomError, match=r"with filename 'nope\.safetensors' not found") as info:
        load(runtime, "nope.safetensors")
    assert str(models_dir) in str(info.value)


def test_an_image_with_alpha_is_refused_with_the_model_named(runtime, esrgan_file):
    model = load(runtime, esrgan_file)
    with pytest.raises(LoomError, match="takes 3-channel images") as info:
        run_upscale(runtime, model, torch.rand(1, 8, 8, 4))
    assert "tiny-x4.safetensors" in str(info.value)
