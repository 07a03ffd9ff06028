"""pytest-benchmark entries for the kernel microbenchmarks, timed by pytest-benchmark.

    pytest bench/benchmarks/test_kernels.py --benchmark-only

The cases, passes (forward, backward, both), implementations (eager, compile, ganforge), sizes and skip rules
are bench.kernel_bench's, as `ganforge bench kernels --quick` runs them; `ganforge bench kernels` runs the
full sweep. On a GPU each pass is a CUDA-graph replay where capture works, as in the bench.
"""
import pytest

from ganforge.bench import kernel_bench
from ganforge.bench.suite import resolve_device
from ganforge.bench.timing import synchronized

QUICK = True  # the quick sweep: small sizes, and nothing that takes minutes on a CPU
SIZES = kernel_bench.default_sizes(resolve_device(), QUICK)


@pytest.mark.parametrize("impl", kernel_bench.IMPLS)
@pytest.mark.parametrize("pass_name", kernel_bench.PASSES)
@pytest.mark.parametrize("numel", SIZES)
@pytest.mark.parametrize("op", tuple(kernel_bench.CASES))
def test_kernel(benchmark, op, numel, pass_name, impl, device):
    reason = kernel_bench.skip_reason(impl, device, numel, SIZES[0], QUICK)
    if reason:
        pytest.skip(reason)
    dtype = kernel_bench.bench_dtype(device)
    shape, inputs, impls, fwd_bytes, bwd_bytes = kernel_bench.CASES[op](numel, device, dtype)
    with kernel_bench.compile_settings(impl):
        run, how = kernel_bench.runnable_pass(kernel_bench.implementation(impls, impl), inputs, pass_name, device)
        run()  # compilation, autotuning and first launches stay out of the timing
        benchmark.extra_info.update(op=op, pass_name=pass_name, impl=impl, numel=inputs[0].numel(),
                                    shape=list(shape), dtype=str(dtype).replace("torch.", ""), timing=how,
                                    bytes=kernel_bench.pass_bytes(pass_name, fwd_bytes, bwd_bytes))
        benchmark.group = f"{op} {pass_name} {numel}"
        benchmark(synchronized(run, device))
