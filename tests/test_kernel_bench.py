"""Smoke test of the kernel microbenchmark rows on CPU (quick mode: the smallest size only)."""
import torch

from ganforge.bench.kernel_bench import IMPLS, PASSES, format_table, kernel_rows

KEYS = {"op", "pass", "impl", "numel", "dtype", "shape", "median_ms", "p20_ms", "p80_ms", "spread", "bytes",
        "gbps", "pct_of_copy", "error"}


def test_quick_rows_cover_every_op_pass_and_impl():
    rows = kernel_rows("cpu", quick=True, copy_gbps=10.0)
    assert {(r["op"], r["pass"], r["impl"]) for r in rows} == {
        (op, p, i) for op in ("bias_act", "gradient_penalty") for p in PASSES for i in IMPLS}
    for r in rows:
        assert KEYS <= r.keys()
        assert r["bytes"] > 0 and r["numel"] == torch.Size(r["shape"]).numel()
        if r["impl"] == "compile":  # too slow on CPU in quick mode: skipped, with the reason
            assert r["median_ms"] is None and "skipped" in r["error"]
        else:  # eager, and the Triton interpreter at the smallest size
            assert r["error"] is None, r["error"]
            assert 0 < r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
            assert abs(r["pct_of_copy"] - r["gbps"] / 10.0 * 100) < 1e-9
    assert "gradient_penalty" in format_table(rows)
