"""Timing and hardware ceilings shared by every benchmark.

GPU: CUDA events through triton.testing.do_bench (median of many runs after warm-up).
CPU: perf_counter over repeated calls, median and spread quoted.
"""
import statistics
import time
from dataclasses import dataclass

import torch


@dataclass
class Quantiles:
    """Median, 20th and 80th percentiles of repeated measurements, in the samples' own unit: milliseconds
    from time_fn, images/s in the training bench."""
    median: float
    p20: float
    p80: float
    count: int

    @property
    def spread(self):
        """Relative spread (p80 - p20) / median: how much a figure moves run to run."""
        return (self.p80 - self.p20) / self.median if self.median > 0 else 0.0


def quantiles(samples):
    """The Quantiles of already measured samples."""
    # "inclusive" keeps p20/p80 inside the observed range: with a handful of repeats the default method
    # extrapolates past the extremes and overstates the spread.
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=5, method="inclusive") if len(samples) >= 2 else [samples[0]] * 4
    return Quantiles(statistics.median(samples), q[0], q[3], len(samples))


def time_fn(fn, device, *, warmup=3, reps=20, budget_s=None):
    """Time ``fn()``: the Quantiles of its milliseconds; on CUDA with device events (do_bench), on CPU with a
    host clock.

    ``budget_s`` caps the total timed seconds on CPU (at least 3 repeats), so sweeps stay short there.
    """
    device = torch.device(device)
    if device.type == "cuda":
        import triton.testing

        return quantiles(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="all"))
    for _ in range(warmup):
        fn()
    samples, start_all = [], time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and len(samples) >= 3 and time.perf_counter() - start_all > budget_s:
            break
    return quantiles(samples)


def copy_bandwidth_gbps(device, nbytes=None):
    """Device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    device = torch.device(device)
    nbytes = nbytes or (2 << 30 if device.type == "cuda" else 64 << 20)
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    ms = time_fn(lambda: dst.copy_(src), device, reps=20)
    return 2 * nbytes / (ms.median * 1e-3) / 1e9


def matmul_tflops(device, dtype=torch.bfloat16, n=None):
    """Measured dense matrix-product rate in TFLOP/s on random data (the MFU denominator)."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 512)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = time_fn(lambda: a @ b, device, reps=10)
    return 2 * n**3 / (ms.median * 1e-3) / 1e12


def sync(device):
    """Wait until every kernel queued on a CUDA ``device`` has finished (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def synchronized(fn, device):
    """Wrap ``fn`` so that on a GPU it returns only when its kernels have finished: a host-side timer
    (pytest-benchmark's) then times the work, not just the launches."""
    if torch.device(device).type != "cuda":
        return fn

    def run():
        out = fn()
        sync(device)
        return out
    return run


def time_blocks(block, device, *, repeats):
    """Run ``block()`` ``repeats`` times and return each run's milliseconds.

    CUDA: the run sits between two device events on the current stream (where eager kernels and graph
    replays are queued); the device is synchronized before each run, so earlier work is not counted, and
    after it, so every queued kernel is. CPU: perf_counter around the call (CPU work is synchronous).
    """
    device = torch.device(device)
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            block()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            block()
            samples.append((time.perf_counter() - t0) * 1e3)
    return samples


class StepClock:
    """Marks between consecutive steps of a loop; ``intervals_ms()`` gives the time between marks.

    CUDA events are recorded without synchronizing, so marking does not stall the queue; they are read once
    at the end. On CPU the marks are host clock readings.
    """

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.marks = []

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals_ms(self):
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]
