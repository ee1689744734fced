"""BitWidthSchedule: rung boundaries, shapes, resume, listeners."""

from __future__ import annotations

import pytest
from sqat_kernels.schedule import RECIPE, BitWidthSchedule, resolve_rung


def _rungs(s: BitWidthSchedule) -> list[str]:
    return [s.rung_at(i) for i in range(s.total_steps)]


@pytest.mark.parametrize(
    "total, expected",
    [
        (1, [(0, 0, RECIPE)]),
        (2, [(0, 0, "F32"), (1, 1, RECIPE)]),
        (3, [(0, 0, "F32"), (1, 1, "F16"), (2, 2, RECIPE)]),
        (7, [(0, 2, "F32"), (3, 3, "F16"), (4, 4, "Q8_0"), (5, 6, RECIPE)]),
        (10, [(0, 2, "F32"), (3, 4, "F16"), (5, 6, "Q8_0"), (7, 9, RECIPE)]),
        (100, [(0, 29, "F32"), (30, 49, "F16"), (50, 69, "Q8_0"), (70, 99, RECIPE)]),
        (1000, [(0, 299, "F32"), (300, 499, "F16"), (500, 699, "Q8_0"), (700, 999, RECIPE)]),
        (333, [(0, 99, "F32"), (100, 166, "F16"), (167, 233, "Q8_0"), (234, 332, RECIPE)]),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else "",
)
def test_linear_phases(total, expected):
    assert BitWidthSchedule(total).phases() == expected


def test_linear_reproduces_the_seed_shape():
    # 10 % warm-up at the first rung, descent over 10-90 %, the last 10 % at the recipe type.
    s = BitWidthSchedule(1000)
    rungs = _rungs(s)
    assert set(rungs[:100]) == {"F32"} and set(rungs[900:]) == {RECIPE}
    descent = rungs[100:900]
    assert descent == sorted(descent, key=s.ladder.index)  # monotone through the ladder
    assert [descent.count(r) for r in s.ladder] == [200, 200, 200, 200]


@pytest.mark.parametrize("shape", ["linear", "cosine", "step", "constant"])
@pytest.mark.parametrize("total", [1, 2, 5, 50, 257])
def test_shapes_are_monotone_and_end_at_the_last_rung(shape, total):
    s = BitWidthSchedule(total, shape)
    idx = [s.rung_index_at(i) for i in range(total)]
    assert idx == sorted(idx) and idx[-1] == len(s.ladder) - 1


def test_step_constant_cosine():
    assert BitWidthSchedule(10, "step").phases() == [(0, 0, "F32"), (1, 9, RECIPE)]
    assert BitWidthSchedule(10, "constant").phases() == [(0, 9, RECIPE)]
    cos = BitWidthSchedule(100, "cosine").phases()
    assert [p[2] for p in cos] == ["F32", "F16", "Q8_0", RECIPE]
    # the middle rungs are shorter than in the linear schedule
    assert cos[1][1] - cos[1][0] > 20 and cos[0][1] < 29 and cos[3][0] > 70


def test_custom_ladder_and_fractions():
    s = BitWidthSchedule(20, ladder=["f32", "bf16", "q4_0"], warmup=0.25, cooldown=0.0)
    assert s.ladder == ("F32", "BF16", "Q4_0")
    assert s.phases() == [(0, 9, "F32"), (10, 14, "BF16"), (15, 19, "Q4_0")]


def test_step_state_dict_resume_and_listeners():
    seen = []
    s = BitWidthSchedule(10)
    s.add_listener(seen.append)
    for _ in range(4):
        s.step()
    assert s.step_count == 4 and s.current_rung == "F16" and seen == ["F32", "F16"]
    state = s.state_dict()
    t = BitWidthSchedule(10)
    heard = []
    t.add_listener(heard.append)
    t.load_state_dict(state)
    assert t.step_count == 4 and t.current_rung == "F16" and heard == ["F32", "F16"]
    for _ in range(6):
        s.step()
        t.step()
        assert s.current_rung == t.current_rung
    with pytest.raises(ValueError, match="total_steps"):
        BitWidthSchedule(11).load_state_dict(state)
    with pytest.raises(ValueError, match="step_count"):
        BitWidthSchedule(10).load_state_dict({**state, "step_count": 11})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 10, "shape": "exp"}, "valid shapes"),
        ({"total_steps": 10, "ladder": ["F32", "Q9"]}, "Q9"),
        ({"total_steps": 10, "ladder": []}, "at least one"),
        ({"total_steps": 10, "warmup": 0.6, "cooldown": 0.5}, "warmup \\+ cooldown"),
        ({"total_steps": 10, "warmup": -0.1}, "warmup"),
    ],
    ids=["zero-steps", "shape", "ladder-type", "empty-ladder", "fractions", "negative"],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BitWidthSchedule(**kwargs)


@pytest.mark.parametrize(
    "rung, recipe_type, expected",
    [
        ("F32", "Q4_K", "F32"),
        ("F16", "Q4_K", "F16"),
        ("Q8_0", "Q4_K", "Q8_0"),
        (RECIPE, "Q4_K", "Q4_K"),
        ("Q8_0", "Q8_0", "Q8_0"),
        ("Q8_0", "F16", "F16"),
        ("Q4_0", "Q6_K", "Q6_K"),
        ("BF16", "Q5_0", "BF16"),
    ],
)
def test_resolve_rung_never_goes_below_the_recipe(rung, recipe_type, expected):
    assert resolve_rung(rung, recipe_type) == expected
