"""engine.devices: which precision --precision auto picks on a CPU."""
import pytest
import torch


def test_auto_precision_is_bf16_where_the_cpu_has_amx(monkeypatch):
    from ganforge.engine import devices

    monkeypatch.setenv("GANFORGE_CPU_AUTO_PRECISION", "bf16")
    assert devices.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setenv("GANFORGE_CPU_AUTO_PRECISION", "half")
    with pytest.raises(ValueError, match="fp32 or bf16"):
        devices.resolve_precision("auto", torch.device("cpu"))
    monkeypatch.delenv("GANFORGE_CPU_AUTO_PRECISION")  # the suite sets it: the CPU's own rule below

    monkeypatch.setattr(devices, "cpu_bf16_units", lambda: ["AMX", "AVX512-BF16"])
    assert devices.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(devices, "cpu_bf16_units", lambda: ["AVX512-BF16"])
    assert devices.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(devices, "cpu_bf16_units", lambda: [])
    assert devices.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert devices.resolve_precision("fp32", torch.device("cpu")) == "fp32"
