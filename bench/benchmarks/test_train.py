"""pytest-benchmark entries for one training iteration (one D step + one G step) per execution column.

    pytest bench/benchmarks/test_train.py --benchmark-only

Same columns and synthetic data as `ganforge bench train` (bench.train_bench); small batches on CPU, where
the ganforge column (CUDA graphs) is skipped and compile is left to the GPU.
"""
import pytest
import torch

from ganforge.bench.timing import synchronized
from ganforge.bench.train_bench import MODELS, make_config, skip_reason, synthetic_dataset

CASES = [("mlp-28", "none"), ("mlp-28", "wgan-gp"), ("dcgan-32", "none"), ("dcgan-32", "wgan-gp")]


@pytest.mark.parametrize("column", ("eager-fp32", "eager-bf16", "compile", "ganforge"))
@pytest.mark.parametrize("name,objective", CASES)
def test_train_iteration(benchmark, name, objective, column, device, on_gpu):
    from ganforge.engine.trainer import build_session, run_iteration

    reason = skip_reason(column, device)
    if reason:
        pytest.skip(reason)
    if column == "compile" and not on_gpu:
        pytest.skip("torch.compile is benchmarked on GPU only (CPU compile takes minutes)")
    if column == "compile" and objective != "none":
        pytest.skip("torch.compile raises on the double backward of a gradient penalty")
    batch_size = 256 if on_gpu else 8
    dataset = synthetic_dataset(MODELS[name][1], 4 * batch_size)
    session = build_session(make_config(name, objective, column, batch_size, device), dataset=dataset)
    if column == "compile":
        torch._dynamo.reset()
        session.state.G = torch.compile(session.state.G)
        session.state.D = torch.compile(session.state.D)
    counter = iter(range(10**9))

    def iteration():
        run_iteration(session, next(counter))

    # Untimed: compilation, autotuning, and for graphs the runner's eager calls, the capture and a first replay.
    warmup = (getattr(session.runner, "warmup", 0) + 2) if session.graphs else (3 if on_gpu else 1)
    for _ in range(warmup):
        iteration()
    benchmark.extra_info.update(model=name, penalty=objective, column=column, batch_size=batch_size,
                                images_per_iteration=batch_size)
    benchmark.group = f"train {name} {objective}"
    benchmark.pedantic(synchronized(iteration, device), rounds=30 if on_gpu else 3, warmup_rounds=2 if on_gpu else 0)
