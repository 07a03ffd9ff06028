"""pytest-benchmark entries for training iterations (D step + G step) per execution column.

    pytest bench/benchmarks/test_train.py --benchmark-only

Models, objectives, batch sizes, columns, warm-up, block length, synthetic data and skip rules are
bench.train_bench's quick plan, as `ganforge bench train --quick` runs it; `ganforge bench train` runs the
full sweep. One round is one timed block of the plan's iterations.
"""
import itertools

import pytest

from ganforge.bench import train_bench
from ganforge.bench.suite import resolve_device
from ganforge.bench.timing import synchronized
from ganforge.engine.session import run_iteration

QUICK = True  # the quick plan: small batches, and nothing that takes minutes on a CPU
PLAN = train_bench.default_plan(resolve_device(), QUICK)


@pytest.mark.parametrize("column", PLAN.columns)
@pytest.mark.parametrize("objective", PLAN.objectives)
@pytest.mark.parametrize("batch_size", PLAN.batch_sizes)
@pytest.mark.parametrize("name", PLAN.models)
def test_train_iteration(benchmark, name, batch_size, objective, column, device):
    reason = train_bench.skip_reason(column, device, QUICK, objective)
    if reason:
        pytest.skip(reason)
    dataset = train_bench.bench_dataset(train_bench.MODELS[name][1], batch_size)
    session = train_bench.open_session(name, objective, column, batch_size, device, dataset)
    counter = itertools.count()  # iterations are numbered on, as in a training run (the lazy penalty reads it)

    def iterations(n):
        for _ in range(n):
            run_iteration(session, next(counter))

    try:
        iterations(train_bench.warmup_iterations(session, PLAN))
        benchmark.extra_info.update(name=name, penalty=train_bench.OBJECTIVES[objective]["penalty"],
                                    batch_size=batch_size, column=column, iterations_per_round=PLAN.iters,
                                    images_per_round=batch_size * PLAN.iters)
        benchmark.group = f"train {name} {objective} batch {batch_size}"
        benchmark.pedantic(synchronized(lambda: iterations(PLAN.iters), device), rounds=PLAN.repeats)
    finally:
        session = None
        train_bench.release(column)
