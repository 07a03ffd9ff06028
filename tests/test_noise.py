"""`ganforge bench noise` and the noise-aware `ganforge bench compare`, on planted results files.

The figures are planted so every within/between/noise figure and every verdict is known in advance; one small
end-to-end run checks the real subprocess path (its figures are only checked for shape, never for time).
"""
import json
import random

import pytest

from ganforge.bench import noise
from ganforge.bench.compare import compare_files, compare_results, kernel_key, train_key
from ganforge.bench.harness import main as bench_main


def _train_row(name, column, images_per_sec, spread):
    return {"name": name, "model": name.split("-")[0], "data_shape": [1, 28, 28], "loss": "wgan",
            "penalty": "wgan-gp", "objective": "wgan-gp", "batch_size": 64, "column": column,
            "precision": "fp32", "graphs": False, "kernels": "ref", "compiled": False, "iters": 4, "repeats": 3,
            "images_per_sec": images_per_sec, "images_per_sec_p20": None, "images_per_sec_p80": None,
            "spread": spread, "ms_per_iter": None, "ms_per_d_step": None, "ms_per_g_step": None,
            "peak_mem_mb": None, "flops_per_iter": None, "tflops": None, "mfu": None,
            "speedup_vs_eager_fp32": None, "speedup_vs_best_other": None}


def _kernel_row(median_ms, spread):
    return {"op": "bias_act", "pass": "forward", "impl": "eager", "numel": 4096, "dtype": "float32",
            "shape": [64, 64], "median_ms": median_ms, "p20_ms": None, "p80_ms": None, "spread": spread,
            "bytes": 32768, "gbps": None, "pct_of_copy": None}


def _results(mlp_ips, dcgan_ips, kernel_ms, spreads=(0.02, 0.02, 0.02)):
    return {"schema": "ganforge-bench/1", "device": "planted-cpu", "device_type": "cpu", "torch": "0.0",
            "triton": None, "git_commit": None, "date": "2026-12-05T00:00:00", "quick": False,
            "ceilings": {"copy_gbps": 1.0, "matmul_tflops_bf16": 1.0, "matmul_tflops_fp32": 1.0},
            "kernels": [_kernel_row(kernel_ms, spreads[2])],
            "train": [_train_row("mlp-28", "ganforge", mlp_ips, spreads[0]),
                      _train_row("dcgan-28", "eager-fp32", dcgan_ips, spreads[1])]}


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def planted_runs(tmp_path):
    """Three runs of planted figures: mlp moves +-5%/10% between runs, dcgan not at all, the kernel by 20%."""
    mlp, dcgan, ms = random.uniform(500, 5000), random.uniform(50, 500), random.uniform(0.01, 1.0)
    runs = [_results(mlp * 1.00, dcgan, ms * 1.0, (0.02, 0.01, 0.03)),
            _results(mlp * 1.10, dcgan, ms * 1.2, (0.04, 0.03, 0.05)),
            _results(mlp * 0.95, dcgan, ms * 1.1, (0.03, 0.08, None))]
    paths = [_write(tmp_path / f"run-{i}.json", r) for i, r in enumerate(runs, 1)]
    return runs, paths


def _noise_file(tmp_path, runs, paths):
    """The noise file of the planted runs, written by the case's own record function."""
    args = type("Args", (), {"measured_case": "train", "repeats": None, "quick": False})()
    record = noise.noise_record(args, [], paths, tmp_path / "noise.json")
    (tmp_path / "noise.json").write_text(json.dumps(record))
    return record, str(tmp_path / "noise.json")


def _row(record, key):
    return next(r for r in record["rows"] if tuple(r["key"]) == key)


def test_noise_from_planted_runs(tmp_path, planted_runs):
    runs, paths = planted_runs
    record, _ = _noise_file(tmp_path, runs, paths)
    assert record["schema"] == "ganforge-noise/1" and record["runs"] == 3 and len(record["rows"]) == 3
    mlp = _row(record, train_key(runs[0]["train"][0]))
    assert mlp["within"] == pytest.approx(0.03)  # the median of the runs' own spreads
    assert mlp["between"] == pytest.approx((1.10 - 0.95) / 1.00)  # (max - min) / median
    assert mlp["noise"] == pytest.approx(0.15) and mlp["cv"] > 0
    dcgan = _row(record, train_key(runs[0]["train"][1]))
    assert dcgan["between"] == pytest.approx(0.0) and dcgan["noise"] == pytest.approx(0.03)  # within wins
    kernel = _row(record, kernel_key(runs[0]["kernels"][0]))
    assert kernel["within"] == pytest.approx(0.04)  # a run without a spread is left out of the median
    assert kernel["between"] == pytest.approx(0.2 / 1.1) and kernel["figure"] == "median_ms"
    assert record["results_files"] == ["run-1.json", "run-2.json", "run-3.json"]


def test_a_row_missing_in_a_run_has_no_noise(tmp_path, planted_runs):
    runs, paths = planted_runs
    runs[1]["train"][0].update(images_per_sec=None, error="RuntimeError: planted")
    paths[1] = _write(tmp_path / "run-2.json", runs[1])
    record, _ = _noise_file(tmp_path, runs, paths)
    row = _row(record, train_key(runs[0]["train"][0]))
    assert row["noise"] is None and "skipped or failed" in row["why"]


def test_compare_gates_on_three_times_the_noise(tmp_path, planted_runs, capsys):
    runs, paths = planted_runs
    _, noise_path = _noise_file(tmp_path, runs, paths)
    base = runs[0]
    inside = json.loads(json.dumps(base))
    inside["train"][0]["images_per_sec"] /= 1.30  # 30% slower: beyond 10%, inside 3 x 15% = 45%
    new = _write(tmp_path / "inside.json", inside)
    assert bench_main(["compare", paths[0], new, "--noise", noise_path]) == 0
    # the mirror image, 1.3x faster, is inside the same bound
    mirror = json.loads(json.dumps(base))
    mirror["train"][0]["images_per_sec"] *= 1.30
    assert compare_results(base, mirror, 0.10, {train_key(base["train"][0]): 0.15})[1]["status"] == "faster-noise"
    out = capsys.readouterr().out
    assert "slower-noise" in out and "45.0% (3x noise)" in out and "0 regression(s)" in out
    # without the noise file the same change is a regression (its runs' spreads are only 2%)
    assert bench_main(["compare", paths[0], new]) == 1
    capsys.readouterr()

    beyond = json.loads(json.dumps(base))
    beyond["train"][1]["images_per_sec"] /= 1.12  # dcgan: noise 3%, bound max(10%, 9%) = 10%
    assert bench_main(["compare", paths[0], _write(tmp_path / "beyond.json", beyond), "--noise", noise_path]) == 1
    out = capsys.readouterr().out
    assert "regression: dcgan-28 wgan-gp b64 eager-fp32 images_per_sec (REGRESSION)" in out
    assert "10.0% (threshold)" in out


def test_compare_reports_improvements_and_falls_back_to_the_threshold(tmp_path, planted_runs, capsys):
    runs, paths = planted_runs
    _, noise_path = _noise_file(tmp_path, runs, paths)
    faster = json.loads(json.dumps(runs[0]))
    faster["train"][0]["images_per_sec"] *= 1.40  # 1.4x faster: beyond 10%, inside 45%
    faster["train"][1]["images_per_sec"] *= 1.25  # beyond dcgan's bound of 10%
    faster["kernels"].append(dict(_kernel_row(1.0, 0.01), op="upfirdn"))  # in no noise file
    base = json.loads(json.dumps(runs[0]))
    base["kernels"].append(dict(_kernel_row(1.0 / 1.15, 0.01), op="upfirdn"))
    base_path, new_path = _write(tmp_path / "b.json", base), _write(tmp_path / "f.json", faster)
    out_json = tmp_path / "comparison.json"
    assert bench_main(["compare", base_path, new_path, "--noise", noise_path, "--out", str(out_json)]) == 1
    text = capsys.readouterr().out
    assert "IMPROVED" in text and "1 improvement(s)" in text
    assert "10.0% (threshold (no noise row))" in text and "regression: upfirdn forward eager" in text
    saved = json.loads(out_json.read_text())
    by_label = {r["label"]: r for r in saved["rows"]}
    assert by_label["dcgan-28 wgan-gp b64 eager-fp32"]["status"] == "IMPROVED"
    assert by_label["mlp-28 wgan-gp b64 ganforge"]["status"] == "faster-noise"
    assert saved["geometric_means"]["train"] == pytest.approx((1.40 * 1.25) ** 0.5)
    assert saved["exit_code"] == 1

    # only the improvement left: passes, unless improvements must be explained
    faster["kernels"].pop()
    base["kernels"].pop()
    _write(tmp_path / "b.json", base), _write(tmp_path / "f.json", faster)
    assert compare_files(base_path, new_path, noise_path=noise_path, out=lambda _: None) == 0
    lines = []
    assert compare_files(base_path, new_path, noise_path=noise_path, fail_on_improvement=True,
                         out=lines.append) == 1
    assert "make NEW the baseline" in lines[-1]


def test_compare_rejects_a_file_that_is_not_a_noise_file(tmp_path, planted_runs, capsys):
    _, paths = planted_runs
    assert bench_main(["compare", paths[0], paths[1], "--noise", paths[2]]) == 2
    assert "not a noise file" in capsys.readouterr().out


@pytest.mark.slow  # two bench processes, about 12 s here
def test_noise_end_to_end_two_kernel_runs(tmp_path, capsys):
    out = tmp_path / "noise.json"
    assert bench_main(["noise", "--runs", "2", "--case", "kernels", "--quick", "--device", "cpu",
                       "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["runs"] == 2 and record["case"] == "kernels" and record["device_type"] == "cpu"
    assert sorted(p.name for p in (tmp_path / "noise-runs").glob("run-*.json")) == ["run-1.json", "run-2.json"]
    measured = [r for r in record["rows"] if r["noise"] is not None]
    assert measured and all(r["noise"] >= max(r["within"], r["between"]) for r in measured)
    assert all(len(r["runs"]) == 2 for r in record["rows"])
    assert "3x noise" in capsys.readouterr().out


def test_noise_from_existing_results_files(tmp_path, planted_runs, capsys):
    _, paths = planted_runs
    out = tmp_path / "sub" / "noise.json"
    assert bench_main(["noise", "--from-results", paths[0], paths[2], "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["runs"] == 2 and record["results_files"] == ["../run-1.json", "../run-3.json"]
    mlp = next(r for r in record["rows"] if r["label"] == "mlp-28 wgan-gp b64 ganforge")
    assert mlp["between"] == pytest.approx(0.05 / 0.975) and mlp["within"] == pytest.approx(0.025)
    assert "mlp-28 wgan-gp b64 ganforge" in capsys.readouterr().out
    assert bench_main(["noise", "--from-results", paths[0], "--out", str(out)]) == 2
