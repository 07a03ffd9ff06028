"""The prepared GPU check runs clean on a machine without CUDA: environment written, GPU phases skipped."""
import json

import pytest
import torch

from ganforge.bench import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check runs for real")
def test_gpu_check_skips_gpu_phases_without_cuda(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["cuda_available"] is False and env["torch"] == torch.__version__
    assert "GPU tests and GPU benchmarks skipped" in capsys.readouterr().out
    assert not (tmp_path / "gpu_check.json").exists()
