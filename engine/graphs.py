"""Replaying whole D and G steps as CUDA graphs.

Each step kind (D step, D step with the penalty, G step) runs eagerly on a side stream for its first
``warmup`` calls — that allocates optimizer state, picks cuDNN algorithms and compiles the Triton kernels —
then is captured once and replayed on every later call. Capture records work without running it, so the
capturing call replays the new graph once: every call does exactly one step of training.

Warm-up and capture run with cuDNN's benchmark-mode algorithm search on: the warm-up calls try the algorithms
for each convolution shape, stride, dtype and layout (channels_last on CUDA, see engine.session) on the capture
stream, and the capture then records the tuned plans from cuDNN's cache, so every replay runs them. The
process-wide cuDNN settings are restored when each warm-up or capture call returns.

The step functions themselves are engine.steps' (a TrainState's) — the same code the eager runner calls — which is
what makes the eager run the reference for the graphed one.
"""
from contextlib import contextmanager

import torch


class GraphRunner:
    def __init__(self, state, warmup=3, cudnn_benchmark=True):
        if state.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device; use the eager runner (--graphs off) on "
                             f"{state.device.type}")
        if state.precision == "fp16" and state.cfg.optimizer != "adam":
            raise ValueError("--precision fp16 with --graphs on needs --optimizer adam: only the fused Adam "
                             "step skips inf/NaN steps without reading the loss scaler back to the host")
        self.state = state
        self.warmup = warmup
        self.cudnn_benchmark = cudnn_benchmark
        self.side_stream = torch.cuda.Stream(device=state.device)
        self.graphs = {}       # step kind -> torch.cuda.CUDAGraph
        self.outputs = {}      # step kind -> the static statistics tensor the graph writes
        self.calls = {}        # step kind -> calls so far (warm-up, capture and replays)
        self.replays = {}      # step kind -> replays so far (the capturing call's own replay included)

    @contextmanager
    def _tuning(self):
        """cuDNN benchmark mode for one warm-up or capture call (only that flag; restored on return)."""
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = previous or self.cudnn_benchmark
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = previous

    def _replay(self, kind):
        self.graphs[kind].replay()
        self.replays[kind] = self.replays.get(kind, 0) + 1
        return self.outputs[kind]

    def _run(self, kind, fn):
        calls = self.calls.get(kind, 0)
        self.calls[kind] = calls + 1
        if kind in self.graphs:
            return self._replay(kind)
        if calls < self.warmup:
            # Warm-up steps are real training steps, run eagerly on a side stream as capture requires.
            self.side_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side_stream), self._tuning():
                out = fn()
            torch.cuda.current_stream().wait_stream(self.side_stream)
            return out
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        # Separate memory pools: the graphs replay in a data-dependent order (n_critic, lazy penalty), and a
        # shared pool is safe only when graphs always replay in capture order.
        with self._tuning(), torch.cuda.graph(graph):
            self.outputs[kind] = fn()
        self.graphs[kind] = graph
        return self._replay(kind)

    def d_step(self, penalize):
        kind = "d_penalty" if penalize else "d"
        return self._run(kind, lambda: self.state.d_step(penalize))

    def g_step(self):
        return self._run("g", self.state.g_step)
