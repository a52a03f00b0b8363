"""LatentBatchSeedBehavior, LatentConcat and LatentCut, against hand-computed tensors."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import make_ctx, object_info_of, run_one


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def test_seed_behavior_fixed_shares_the_first_index_random_drops_it(ctx):
    latent = {"samples": torch.zeros(3, 4, 2, 2), "batch_index": [5, 6, 7]}
    fixed = run_one("LatentBatchSeedBehavior", ctx, samples=latent, seed_behavior="fixed")
    assert fixed["batch_index"] == [5, 5, 5] and latent["batch_index"] == [5, 6, 7]
    plain = run_one(
        "LatentBatchSeedBehavior",
        ctx,
        samples={"samples": latent["samples"]},
        seed_behavior="fixed",
    )
    assert plain["batch_index"] == [0, 0, 0]
    random = run_one("LatentBatchSeedBehavior", ctx, samples=latent, seed_behavior="random")
    assert "batch_index" not in random and random["samples"] is latent["samples"]
    seed = object_info_of("LatentBatchSeedBehavior")["input"]["required"]["seed_behavior"]
    assert seed[1]["default"] == "fixed" and seed[1]["options"] == ["random", "fixed"]


def test_concat_joins_along_x_and_y_in_either_order(ctx):
    a = {"samples": torch.zeros(2, 4, 2, 3), "noise_mask": "kept"}
    b = {"samples": torch.ones(1, 4, 2, 3)}  # batch 1 tiles to 2
    x = run_one("LatentConcat", ctx, samples1=a, samples2=b, dim="x")
    assert x["samples"].shape == (2, 4, 2, 6) and x["noise_mask"] == "kept"
    assert x["samples"][0, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]
    minus_y = run_one("LatentConcat", ctx, samples1=a, samples2=b, dim="-y")
    assert minus_y["samples"][1, 0, :, 0].tolist() == [1, 1, 0, 0]
    video = run_one(
        "LatentConcat",
        ctx,
        samples1={"samples": torch.zeros(1, 4, 2, 1, 1)},
        samples2={"samples": torch.ones(1, 4, 3, 1, 1)},
        dim="t",
    )
    assert video["samples"][0, 0, :, 0, 0].tolist() == [0, 0, 1, 1, 1]


def test_concat_of_mismatched_latents_names_the_node_and_inputs(ctx):
    with pytest.raises(ValueError, match=r"LatentConcat: samples2 .* along y"):
        run_one(
            "LatentConcat",
            ctx,
            samples1={"samples": torch.zeros(1, 4, 2, 2)},
            samples2={"samples": torch.zeros(1, 4, 2, 3)},
            dim="y",
        )


def test_cut_clamps_index_and_amount_like_comfyui(ctx):
    latent = {"samples": torch.arange(6.0).reshape(1, 1, 1, 6)}

    def cut(**kwargs):
        return run_one("LatentCut", ctx, samples=latent, **kwargs)["samples"][0, 0, 0].tolist()

    assert cut(dim="x", index=1, amount=2) == [1, 2]
    assert cut(dim="x", index=4, amount=5) == [4, 5]
    assert cut(dim="x", index=99, amount=3) == [5]
    assert cut(dim="x", index=-2, amount=5) == [4, 5]
    assert cut(dim="x", index=-99, amount=2) == [0, 1]
    tall = {"samples": torch.arange(4.0).reshape(1, 1, 4, 1)}
    out = run_one("LatentCut", ctx, samples=tall, dim="y", index=2, amount=1)["samples"]
    assert out.flatten().tolist() == [2.0]
    with pytest.raises(ValueError, match="LatentCut: input 'samples'"):
        run_one("LatentCut", ctx, samples={"samples": torch.zeros(1, 4, 4)}, dim="t")
    assert object_info_of("LatentCut")["input_order"]["required"] == [
        "samples",
        "dim",
        "index",
        "amount",
    ]
