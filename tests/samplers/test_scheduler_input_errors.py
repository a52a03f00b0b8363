"""Schedule nodes given a value their formula cannot take (log of 0, a 1/0 power) report a
NodeInputError naming the node and the input; ComfyUI 0.8 raises Python's math error."""

from __future__ import annotations

import pytest

from loom.errors import NodeInputError


@pytest.fixture(scope="module")
def registry():
    from loom.testing import make_registry

    return make_registry("samplers")


def run(registry, class_type, **inputs):
    node = registry.get_node(class_type)
    return node.impl.execute(node.impl.create(), inputs, None).values[0]


@pytest.mark.parametrize("class_type", ["ExponentialScheduler", "PolyexponentialScheduler"])
@pytest.mark.parametrize("name", ["sigma_min", "sigma_max"])
def test_log_spaced_schedules_need_positive_sigmas(registry, class_type, name):
    inputs = {"steps": 4, "sigma_max": 14.6, "sigma_min": 0.03}
    if class_type == "PolyexponentialScheduler":
        inputs["rho"] = 1.0
    with pytest.raises(NodeInputError) as info:
        run(registry, class_type, **{**inputs, name: 0.0})
    assert str(info.value) == (
        f"{class_type}: {name} must be greater than 0 (the schedule is spaced by log(sigma)), "
        "got 0.0"
    )
    assert info.value.inputs == (name,)
    assert run(registry, class_type, **inputs).shape == (5,)


def test_karras_needs_a_positive_rho(registry):
    inputs = {"steps": 4, "sigma_max": 14.6, "sigma_min": 0.0}
    with pytest.raises(NodeInputError, match=r"KarrasScheduler: rho must be greater than 0"):
        run(registry, "KarrasScheduler", **inputs, rho=0.0)
    assert run(registry, "KarrasScheduler", **inputs, rho=7.0)[-2] == 0.0  # sigma_min 0 is fine


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_beta_schedule_needs_positive_alpha_and_beta(registry, name):
    inputs = {"model": None, "steps": 4, "alpha": 0.6, "beta": 0.6}
    with pytest.raises(NodeInputError, match=rf"BetaSamplingScheduler: {name} must be greater"):
        run(registry, "BetaSamplingScheduler", **{**inputs, name: 0.0})
