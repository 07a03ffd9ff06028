"""bench/report.py: the figures and the page of `ganforge bench report --out DIR`, from planted results files."""
import io
import json
import random
import re

import pytest
from PIL import Image

from ganforge.bench.harness import main as bench_main
from ganforge.bench.history import query, record
from ganforge.bench.report import compare_columns, history_series
from ganforge.bench.results import SCHEMA, TRAIN_FIGURES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train_row(column, images_per_sec, name="mlp-28", objective="r1", speedup=None):
    timed = images_per_sec is not None
    row = dict.fromkeys(TRAIN_FIGURES)
    row.update(name=name, model=name.split("-")[0], data_shape=[1, 28, 28], objective=objective, loss="ns",
               penalty=objective, batch_size=64, column=column, precision="fp32", graphs=False, kernels="ref",
               compiled=False, iters=4, repeats=3, images_per_sec=images_per_sec, speedup_vs_best_other=speedup,
               error=None if timed else "RuntimeError: double backward", skipped=None)
    if timed:
        row.update(images_per_sec_p20=images_per_sec * 0.95, images_per_sec_p80=images_per_sec * 1.05, spread=0.1,
                   ms_per_iter=64e3 / images_per_sec, ms_per_d_step=32e3 / images_per_sec,
                   ms_per_g_step=32e3 / images_per_sec)
    return row


def _kernel_row(op, pass_name, impl, numel, gbps):
    ms = numel * 8 / gbps / 1e6
    return {"op": op, "pass": pass_name, "impl": impl, "numel": numel, "dtype": "float32", "shape": [numel],
            "median_ms": ms, "p20_ms": ms * 0.9, "p80_ms": ms * 1.1, "spread": 0.2, "bytes": numel * 8, "gbps": gbps,
            "pct_of_copy": gbps * 10}


def _results(commit, date, rng, train=True, kernels=True):
    rows = [_train_row(c, rng.uniform(100, 1000)) for c in ("eager-fp32", "eager-bf16", "loop")] \
        + [_train_row("compile", None)] if train else []
    kernel_rows = [_kernel_row(op, p, impl, n, rng.uniform(0.5, 9)) for op in ("bias_act", "gradient_penalty")
                   for p in ("forward", "both") for impl in ("eager", "compile")
                   for n in (4096, 65536)] if kernels else []
    return {"schema": SCHEMA, "device": "cpu: test machine", "device_type": "cpu", "torch": "2.13.0", "triton": None,
            "git_commit": commit, "date": date, "quick": True, "notes": [],
            "ceilings": {"copy_gbps": 10.0, "matmul_tflops_bf16": 0.5, "matmul_tflops_fp32": 0.2},
            "kernels": kernel_rows, "train": rows}


def _quality(rng):
    def curve(name, kind, start):
        points = [{"mark_s": s, "train_seconds": float(s), "fid": start / (1 + i) + rng.random()}
                  for i, s in enumerate((15, 30, 60))]
        return {"name": name, "kind": kind, "points": points}

    return {"schema": "ganforge-quality/1", "device": "cpu: test machine", "git_commit": "c" * 40, "torch": "2.13.0",
            "date": "2026-12-04T00:00:00+00:00", "fid_samples": 2000, "fid_real_floor": 3.5,
            "curves": [curve("default", "recipe", 200.0), curve("pytorch-gan-dcgan", "peer", 600.0)]}


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def _png_ok(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000, path
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.width > 600 and image.height > 300


def _images_of(page):
    return set(re.findall(r'<img src="([^"]+)"', page))


@pytest.fixture()
def planted(tmp_path):
    rng = random.Random()
    results = _write(tmp_path / "new.json", _results("b" * 40, "2026-12-04T10:00:00+00:00", rng))
    db = tmp_path / "history.sqlite"
    for commit, day in (("a" * 40, "02"), ("b" * 40, "04"), ("e" * 40 + "-dirty", "03")):
        record(db, _results(commit, f"2026-12-{day}T10:00:00+00:00", rng))
    quality = _write(tmp_path / "quality.json", _quality(rng))
    empty = tmp_path / "no-records"
    empty.mkdir()
    return {"results": results, "db": str(db), "quality": quality, "empty": str(empty), "out": tmp_path / "report"}


def test_report_draws_every_figure_and_the_page_names_exactly_those(planted, capsys):
    out = planted["out"]
    assert bench_main(["report", planted["results"], "--out", str(out), "--history", planted["db"],
                       "--quality", planted["quality"], "--records", planted["empty"]]) == 0
    names = {"training.png", "kernels.png", "history.png", "time_to_fid.png"}
    assert {p.name for p in out.glob("*.png")} == names
    for name in names:
        _png_ok(out / name)
    page = (out / "index.html").read_text()
    assert _images_of(page) == names
    assert "left out" not in page
    assert page.count("<figcaption>") == 4 and "new.json" in page and "quality.json" in page
    assert capsys.readouterr().out.count("wrote ") == 5


def test_a_figure_without_data_is_left_out_with_its_reason(planted, tmp_path, capsys):
    train_only = _write(tmp_path / "train-only.json", _results("d" * 40, "2026-12-04T11:00:00+00:00",
                                                              random.Random(), kernels=False))
    out = planted["out"]
    (out).mkdir()
    (out / "kernels.png").write_bytes(b"stale")  # an earlier report's figure must not survive
    assert bench_main(["report", train_only, "--out", str(out), "--history", "off", "--records",
                       planted["empty"]]) == 0
    assert {p.name for p in out.glob("*.png")} == {"training.png"}
    _png_ok(out / "training.png")
    page = (out / "index.html").read_text()
    assert _images_of(page) == {"training.png"}
    printed = capsys.readouterr().out
    assert "left out Kernel bandwidth against size: no timed kernel rows in" in printed
    assert "left out Figures over commits: --history off" in printed
    assert "left out Time to FID, recipes beside the peers: no time-to-quality files" in printed
    assert page.count('class="left-out"') == 3


def test_without_out_it_prints_the_markdown_tables(planted, capsys):
    assert bench_main(["report", planted["results"], "--section", "train"]) == 0
    printed = capsys.readouterr().out
    assert "### Training throughput" in printed and "### Kernels" not in printed and "| loop" in printed


def test_ganforge_bar_and_strongest_other_on_a_planted_configuration():
    rows = [_train_row("eager-fp32", 300.0), _train_row("eager-bf16", 500.0), _train_row("compile", None),
            _train_row("compile-graphs", 400.0), _train_row("graphs-ref", 900.0), _train_row("eager-explicit", 950.0),
            _train_row("ganforge", 1000.0, speedup=2.0)]
    ours, strongest, ratio = compare_columns(rows)
    assert ours["column"] == "ganforge"           # its own column wins over the faster-looking own columns
    assert strongest["column"] == "eager-bf16"    # graphs-ref and eager-explicit are ganforge's own, not "other"
    assert ratio == pytest.approx(2.0)            # the ratio the bench recorded in the row
    without_own = [r for r in rows if r["column"] != "ganforge"] + [_train_row("loop", 750.0)]
    ours, strongest, ratio = compare_columns(without_own)
    assert ours["column"] == "loop" and ratio == pytest.approx(1.5)  # computed: no recorded ratio on the row
    assert compare_columns([_train_row("eager-fp32", 10.0)])[2] is None


def test_history_keeps_p20_p80_and_picks_rows_measured_at_several_commits(planted):
    rows = query(planted["db"], case="mlp-28", column="loop")
    assert len(rows) == 3 and all(r["p20"] < r["value"] < r["p80"] for r in rows)
    kernel = query(planted["db"], case="kernel/bias_act/forward", column="eager")[0]
    assert kernel["p20"] == pytest.approx(kernel["value"] * 0.9)
    series = history_series(query(planted["db"]))
    assert 0 < len(series) <= 6 and all(len({r["git_commit"] for r in v}) == 3 for v in series.values())
    picked = history_series(query(planted["db"]), ["mlp-28 · r1 · loop"])
    assert len(picked) == 1


def test_figures_picks_a_subset_and_names_it_on_the_page(planted, capsys):
    out = planted["out"]
    assert bench_main(["report", planted["results"], "--figures", "training", "--out", str(out), "--history",
                       planted["db"], "--records", planted["empty"]]) == 0
    assert {p.name for p in out.glob("*.png")} == {"training.png"}
    page = (out / "index.html").read_text()
    assert _images_of(page) == {"training.png"} and "left out" not in page and "--figures training" in page
    with pytest.raises(SystemExit):
        bench_main(["report", "--figures", "training,pie", "--out", str(out)])


def test_a_large_sweep_keeps_the_largest_batch_of_each_model_and_objective():
    from ganforge.bench.report import MAX_PANELS, fewer_panels

    batches = random.sample([32, 64, 128, 256, 512, 1024], 4)
    groups = {(name, objective, batch): {"rows": []} for name in ("mlp-28", "dcgan-64")
              for objective in ("r1", "wgan-gp") for batch in batches}
    assert len(groups) > MAX_PANELS
    kept = fewer_panels(groups)
    assert sorted(kept) == sorted((n, o, max(batches)) for n in ("mlp-28", "dcgan-64") for o in ("r1", "wgan-gp"))
    few = dict(list(groups.items())[:3])
    assert fewer_panels(few) == few


def test_a_file_that_is_not_results_is_an_error_not_a_traceback(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert bench_main(["report", str(broken), "--out", str(tmp_path / "out"), "--history", "off"]) == 2
    assert "is not JSON" in capsys.readouterr().err


def test_a_configuration_measured_in_two_files_is_drawn_from_the_newer_only():
    from ganforge.bench.report import training_groups

    def results(date, images_per_sec):
        row = {"name": "mlp-28", "objective": "r1", "batch_size": 64, "column": "eager-fp32",
               "images_per_sec": images_per_sec}
        return {"date": date, "train": [row, dict(row, column="steps")]}

    newer, older = results("2026-12-05T01:00", 200.0), results("2026-12-05T00:30", 100.0)
    groups = training_groups([("after.json", newer), ("before.json", older)])  # file order is not date order
    (group,) = groups.values()
    assert group["path"] == "after.json" and [r["images_per_sec"] for r in group["rows"]] == [200.0, 200.0]
