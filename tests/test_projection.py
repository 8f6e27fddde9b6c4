"""The 8-GPU projection (jaxrun/projection.py): ring-collective arithmetic by hand, the per-stage sums, the checks on
the step bench it reads, and the collectives counted from the compiled 8-device step of the tiny config."""

import jax
import numpy as np
import pytest

from jaxrun import model, projection
from jaxrun.config import ConfigError, load_config

TINY = load_config(None)  # stages: 14 / 14 / 14 steps of 64 / 128 / 192 tokens per rank, then 3 extension steps


def test_ring_collectives_cost_what_nccl_counts():
    # 8 GB reduce-scattered over 8 devices at 400 GB/s: each device moves 7/8 of it -> 17.5 ms; all-reduce twice that
    rows = [{"kind": "reduce-scatter", "bytes": 8e9}]
    assert projection.comm_ms(rows, 8, 400.0) == pytest.approx(17.5)
    assert projection.comm_ms([{"kind": "all-reduce", "bytes": 8e9}], 8, 400.0) == pytest.approx(35.0)
    assert projection.comm_ms([{"kind": "all-gather", "bytes": 2e9}, {"kind": "all-to-all", "bytes": 1e9}], 2, 100.0) == \
        pytest.approx(1e3 * (0.5 * 2e9 + 0.5 * 1e9) / 100e9)
    assert projection.comm_ms([{"kind": "collective-permute", "bytes": 1e9}], 8, 100.0) == pytest.approx(10.0)  # all of it


def _bench(ms_by_phase, ranks=1):
    stages = [(0, 64), (1, 128), (2, 192), (3, 192)]
    return {"device_kind": "test GPU", "phases": [
        {"phase": p, "median_ms": ms_by_phase[p], "tokens_per_rank": t, "tokens_per_step": t * ranks} for p, t in stages]}


def test_projection_adds_compute_and_communication_per_stage():
    coll = {"grad_tied": [{"kind": "reduce-scatter", "bytes": 8e9}], "grad_untied": [{"kind": "reduce-scatter", "bytes": 16e9}],
            "update_adam": [{"kind": "all-gather", "bytes": 8e9}], "update_muon": []}
    p = projection.project(TINY, _bench({0: 10.0, 1: 20.0, 2: 30.0, 3: 40.0}), coll, 8, 400.0)
    # grad comm: 17.5 ms tied (steps 0 .. 29, the untie step), 35 ms untied: phase 3 (steps 28 .. 41) has 2 tied steps;
    # update: half of 17.5 (Adam's gathers on odd steps only)
    expected = [(14, 10.0, 17.5), (14, 20.0, 17.5), (14, 30.0, (2 * 17.5 + 12 * 35.0) / 14), (3, 40.0, 35.0)]
    for s, (n, compute, grad) in zip(p["stages"], expected):
        assert (s["steps"], s["compute_ms"]) == (n, compute)
        assert s["grad_comm_ms"] == pytest.approx(grad) and s["update_comm_ms"] == pytest.approx(8.75)
        assert s["step_ms_no_overlap"] == pytest.approx(compute + grad + 8.75)
        assert s["step_ms_full_overlap"] == pytest.approx(max(compute, grad + 8.75))
    total = sum(n * (c + g + 8.75) for n, c, g in expected) / 1e3
    assert p["train_s_no_overlap"] == pytest.approx(total) and p["ratio_no_overlap"] == pytest.approx(total / 105.8)


def test_projection_needs_one_rank_per_step_and_every_stage():
    coll = {k: [] for k in ("grad_tied", "grad_untied", "update_adam", "update_muon")}
    with pytest.raises(ConfigError, match="benched with 8 virtual ranks per step: .*data.num_ranks=1"):
        projection.project(TINY, _bench({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}, ranks=8), coll, 8, 400.0)
    partial = _bench({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})
    partial["phases"] = partial["phases"][:2]
    with pytest.raises(ConfigError, match=r"no figure for phase 3 \(--phase 2\)"):
        projection.project(TINY, partial, coll, 8, 400.0)


def test_collectives_of_the_compiled_8_device_step():
    """Counted from the compiled HLO: the gradients reduced over the devices are the model's parameters (every
    element once, reduce-scattered or, for the small ones, all-reduced); the untied step adds the input embedding; the
    Adam step gathers more new weights than the NorMuon-only one."""
    c = projection.step_collectives(TINY, 8)
    params = jax.eval_shape(lambda k: model.init_params(TINY.model, k), jax.random.key(0))
    sizes = {k: int(np.prod(v.shape)) for k, v in params.items()}
    reduced = lambda v: sum(r["elements"] for r in c[v] if r["kind"] in ("reduce-scatter", "all-reduce"))  # noqa: E731
    assert reduced("grad_untied") == sum(sizes.values()) + 1  # and the summed loss, a scalar
    assert reduced("grad_untied") - reduced("grad_tied") == sizes["embed"]
    gathered = lambda v: sum(r["elements"] for r in c[v] if r["kind"] == "all-gather")  # noqa: E731
    assert gathered("update_adam") > gathered("update_muon") > 0
    assert {r["kind"] for r in c["grad_tied"]} == {"reduce-scatter", "all-reduce"}
