"""The counts gate: one step of each kind dispatches no more operators, allocations, bytes or host reads than the
committed baseline (bench/counts_baseline.json) records.

Counts do not move with the machine's load, so this gate cannot flake the way a wall-time gate would. A count
that rose fails with the step, the count and the operators that changed; a count that fell passes with a warning
that says how to lower the baseline. A baseline written under another torch major.minor is skipped: the
operators a torch function dispatches change between versions.
"""
import json
import warnings
from pathlib import Path

import pytest
import torch

from ganforge.bench import counts

BASELINE = Path(__file__).resolve().parent.parent / "bench" / "counts_baseline.json"


@pytest.fixture(scope="module")
def baseline():
    data = json.loads(BASELINE.read_text())
    if data["torch_major_minor"] != counts.torch_major_minor():
        pytest.skip(f"{BASELINE.name} was written with torch {data['torch']} and this is torch {torch.__version__}: "
                    f"operator counts differ between torch versions; rewrite it with `{counts.BASELINE_COMMAND}`")
    return data


@pytest.fixture(scope="module")
def measured():
    return counts.count_steps("cpu")


def test_no_count_rose_above_the_baseline(baseline, measured):
    assert set(measured) == set(baseline["steps"]), (
        f"the steps counted changed (new: {sorted(set(measured) - set(baseline['steps']))}, gone: "
        f"{sorted(set(baseline['steps']) - set(measured))}): rewrite the baseline with `{counts.BASELINE_COMMAND}`")
    rises, falls = counts.compare_counts(baseline["steps"], measured)
    if rises:
        pytest.fail("counts per step rose above bench/counts_baseline.json:\n" + "\n".join(rises), pytrace=False)
    if falls:
        warnings.warn("counts per step fell below bench/counts_baseline.json; lower the baseline with "
                      f"`{counts.BASELINE_COMMAND}` and commit it:\n" + "\n".join(falls))


def test_every_recipe_has_its_step_kinds(measured):
    """The recipes' kinds: R1 every 4th D step gives plain and penalised D steps; WGAN-GP and R1 + R2 penalise every
    D step; the MLP preset keeps an EMA of G, DCGAN's none."""
    assert {"mlp/default/d", "mlp/default/d-penalized", "mlp/default/g", "mlp/default/ema"} <= set(measured)
    assert "mlp/wgan-gp/d" not in measured and "mlp/r1r2/d-penalized" in measured
    assert not any(key.startswith("dcgan/") and key.endswith("/ema") for key in measured)
    for key, step in measured.items():
        assert step["ops"] == sum(step["operators"].values()) > 0, key
        assert 0 < step["allocations"] <= step["ops"] and step["bytes"] > 0, key


def test_a_penalty_adds_operators(measured):
    """The penalised D step runs D's input gradient on top of the plain step: more operators and more memory."""
    for model in counts.MODELS:
        plain, penalized = measured[f"{model}/default/d"], measured[f"{model}/default/d-penalized"]
        assert penalized["ops"] > plain["ops"] and penalized["bytes"] > plain["bytes"]


def test_counting_sees_operators_allocations_and_host_reads():
    """The counter itself, on code whose counts are known: two new tensors, one in-place op, one view, one item()."""
    x, item = torch.ones(4), torch.Tensor.item
    with counts.counting() as counter:
        y = x * 2            # a new 16-byte storage
        y.add_(1)            # in place: no allocation
        z = y.view(2, 2)     # a view: no allocation
        w = z.sum()          # a new 4-byte storage
        value = w.item()     # one host read (its _local_scalar_dense is not counted twice)
    assert value == 12.0
    totals = counter.totals()
    assert totals["operators"] == {"aten.mul.Tensor": 1, "aten.add_.Tensor": 1, "aten.view.default": 1,
                                   "aten.sum.default": 1, "aten._local_scalar_dense.default": 1}
    assert (totals["allocations"], totals["bytes"], totals["host_reads"]) == (2, 20, 1)
    assert torch.Tensor.item is item  # the patched read methods are restored


def test_compare_counts_names_the_step_the_count_and_the_operators():
    base = {"mlp/default/g": {"ops": 2, "allocations": 1, "bytes": 8, "host_reads": 0,
                              "operators": {"aten.mul.Tensor": 1, "aten.add.Tensor": 1}}}
    new = {"mlp/default/g": {"ops": 3, "allocations": 1, "bytes": 4, "host_reads": 0,
                             "operators": {"aten.mul.Tensor": 2, "aten.add.Tensor": 1}}}
    rises, falls = counts.compare_counts(base, new)
    assert rises == ["mlp/default/g: ops 2 -> 3; operators: aten.mul.Tensor 1 -> 2"]
    assert falls == ["mlp/default/g: bytes 8 -> 4"]


def test_the_command_writes_a_counts_file(tmp_path, monkeypatch, capsys):
    """`ganforge bench counts --out FILE` dispatches here and writes the header and the steps (the counting itself
    is replaced by a stub: the tests above run it)."""
    from ganforge.commands.bench import bench_command

    step = {"ops": 1, "allocations": 1, "bytes": 4, "host_reads": 0, "operators": {"aten.mul.Tensor": 1}}
    monkeypatch.setattr(counts, "count_steps", lambda device: {"mlp/default/g": step})
    out = tmp_path / "counts.json"
    assert bench_command(["counts", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["schema"] == counts.SCHEMA and written["torch_major_minor"] == counts.torch_major_minor()
    assert written["steps"] == {"mlp/default/g": step} and "per step" in written["note"]
    assert "| mlp/default/g | 1 | 1 | 4 | 0 |" in capsys.readouterr().out
    assert written["graph_launches"] == {}  # a CPU has no CUDA graphs to count launches of


def test_kernels_launched_counts_device_kernels_only():
    """The launch counter keeps kernels on the CUDA side and leaves out host events and copies (profiler events
    stood in for by simple objects: the CPU has no CUDA profiler)."""
    from types import SimpleNamespace

    def event(name, device_type):
        return SimpleNamespace(name=name, device_type=device_type)

    events = [event("aten::mm", "DeviceType.CPU"), event("ampere_sgemm_64x64", "DeviceType.CUDA"),
              event("ampere_sgemm_64x64", "DeviceType.CUDA"), event("Memcpy DtoD (Device -> Device)", "DeviceType.CUDA"),
              event("Memset (Device)", "DeviceType.CUDA"), event("bias_act_fwd_kernel", "DeviceType.CUDA")]
    assert counts.kernels_launched(events) == {"ampere_sgemm_64x64": 2, "bias_act_fwd_kernel": 1}


@pytest.mark.gpu
def test_graph_replays_launch_the_same_kernels_every_time():
    """One replay of each captured step launches kernels, and the same number on a second count."""
    first = counts.graph_launches("mlp", "default", "cuda")
    assert set(first) == {"d", "d_penalty", "g"} and all(n > 0 for n in first.values())
    assert counts.graph_launches("mlp", "default", "cuda") == first
