"""Data-parallel training on torch.distributed, one process per device, launched by torchrun.

    torchrun --nproc_per_node 8 -m ganforge train ...                              one node, 8 GPUs
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id RUN -m ganforge train ...          on each of 2 nodes

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each process; ``World`` reads them,
joins the process group (NCCL on GPUs, gloo on the CPU) and offers the few collectives training needs.

How a step stays one step of the same training, whatever the number of ranks:
- ``--batch-size`` is the global batch; each rank computes ``batch_size / world_size`` of its rows.
- Every rank draws the random numbers of the *whole* global batch (z, labels, data indices, augmentation,
  interpolation weights) from the stream all ranks share, seeded alike, and keeps its own rows (``BatchDraw``).
  The generators stay in step on every rank, and a checkpoint's RNG state is no rank's own: resuming on another
  number of ranks draws the same numbers.
- Rank r holds shard r of the training data on its device: the rows of a seeded permutation cut into equal parts
  (the remainder of N / world_size is left out). Its data rows are drawn from its shard, so the global batch
  takes an equal part from every shard.
- After each backward, one flat all-reduce averages the gradients (and BatchNorm running statistics) across
  ranks, inside the step, so the step stays one capturable CUDA graph. DDP is not used: its reducer hooks in
  through the wrapper's forward, and the explicit gradient penalty calls the critic's own methods.
- Parameters start equal (broadcast from rank 0) and every rank applies the same averaged update, so G, D, the
  EMA and the optimizer states stay identical; ``max_difference`` checks that at the end of a run.
- Decisions that depend on the host (a signal, a divergence, whether FID is due) are agreed across ranks over a
  CPU (gloo) group at log intervals, so no rank leaves a collective the others entered.
"""
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import distributed as dist
from torch import nn

# Variables torchrun sets in every process it starts.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class RankLost(RuntimeError):
    """A collective failed or timed out: another rank died, hung, or the network failed."""


class LaunchError(ValueError):
    """The ranks could not start training together (the command's one-line error, exit code 2)."""


@dataclass
class World:
    """This process's place among the training processes. ``World()`` is a single process (no collectives)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False       # started by torchrun (a process group exists once ``start`` ran)
    timeout_s: float = 600.0
    _control: object = None      # a gloo group for host-side agreement (the default group when it is gloo)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def label(self):
        return f"rank {self.rank} of {self.world_size}"

    # -- joining ------------------------------------------------------------------------------------------------
    def device(self, requested):
        """The device this rank trains on: its own GPU (cuda:LOCAL_RANK) when launched on CUDA."""
        device = torch.device(requested)
        if not self.launched or device.type != "cuda":
            return device
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ValueError(f"{self.label} (local rank {self.local_rank}) has no CUDA device: this node has "
                             f"{count}; start at most {count} processes per node (--nproc_per_node {count})")
        return torch.device("cuda", self.local_rank)

    def start(self, device):
        """Join the process group: NCCL on CUDA, gloo on the CPU; raise a clear error if the ranks do not meet."""
        if not self.launched or dist.is_initialized():
            return self
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        try:
            dist.init_process_group(backend, rank=self.rank, world_size=self.world_size,
                                    timeout=timedelta(seconds=self.timeout_s),
                                    device_id=device if device.type == "cuda" else None)
        except (RuntimeError, dist.DistError) as exc:
            raise LaunchError(f"{self.label}: the {self.world_size} ranks did not all join within "
                              f"{self.timeout_s:g} s (is every node started, with the same --nnodes, --nproc_per_node "
                              f"and rendezvous endpoint?): {_first_line(exc)}") from None
        self._control = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
        return self

    def stop(self):
        if self.launched and dist.is_initialized():
            dist.destroy_process_group()

    # -- the training batch ----------------------------------------------------------------------------------------
    def local_batch(self, global_batch):
        if global_batch % self.world_size:
            raise ValueError(f"--batch-size {global_batch} is the global batch and must divide evenly among the "
                             f"{self.world_size} ranks")
        return global_batch // self.world_size

    def rows(self, n):
        """This rank's contiguous part of n items (parts differ by at most one item)."""
        start, end = (n * self.rank) // self.world_size, (n * (self.rank + 1)) // self.world_size
        return slice(start, end)

    # -- collectives inside the steps ------------------------------------------------------------------------------
    def average_(self, tensors):
        """Average ``tensors`` (same dtype) across ranks in place, with one all-reduce of a flat buffer."""
        if not self.launched or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat.div_(self.world_size)
        torch._foreach_copy_(tensors, [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]),
                                                                           tensors)])

    # -- host-side agreement (outside the steps) -------------------------------------------------------------------
    def _reduce_int(self, value, op):
        if not self.launched:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.long)
        try:
            dist.all_reduce(t, op=op, group=self._control)
        except (RuntimeError, dist.DistError) as exc:
            raise self.lost(exc) from None
        return int(t.item())

    def max(self, value):
        """The largest of every rank's integer ``value``."""
        return self._reduce_int(value, dist.ReduceOp.MAX)

    def any(self, flag):
        return bool(self.max(bool(flag)))

    def from_main(self, obj):
        """Rank 0's ``obj`` (any picklable value) on every rank."""
        if not self.launched:
            return obj
        box = [obj if self.is_main else None]
        try:
            dist.broadcast_object_list(box, src=0, group=self._control)
        except (RuntimeError, dist.DistError) as exc:
            raise self.lost(exc) from None
        return box[0]

    def main_does(self, fn, share=False):
        """Run ``fn`` on rank 0 only and return its result there (on every rank with ``share``, else None on the
        others). If it raises, every rank raises: rank 0 its error, the others a ValueError with its message."""
        failure, result = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as exc:
                failure = exc
        message, shared = self.from_main((None if failure is None else f"{failure}", result if share else None))
        if failure is not None:
            raise failure
        if message is not None:
            raise ValueError(f"{self.label}: stopping, as rank 0 did: {message}")
        return result if self.is_main else shared

    def gather(self, tensor):
        """Every rank's CPU ``tensor`` (first dimensions may differ), concatenated in rank order."""
        if not self.launched:
            return tensor
        parts = [None] * self.world_size
        try:
            dist.all_gather_object(parts, tensor.cpu(), group=self._control)
        except (RuntimeError, dist.DistError) as exc:
            raise self.lost(exc) from None
        return torch.cat(parts)

    @torch.no_grad()
    def broadcast_modules_(self, *modules):
        """Copy rank 0's parameters and buffers into every rank's modules."""
        if not self.launched:
            return
        for module in modules:
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)

    @torch.no_grad()
    def max_difference(self, *modules):
        """The largest |x - rank 0's x| over every parameter and float buffer of ``modules``, on any rank."""
        if not self.launched:
            return 0.0
        tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()] if t.is_floating_point()]
        mine = torch.cat([t.detach().float().reshape(-1) for t in tensors])
        main = mine.clone()
        dist.broadcast(main, src=0)
        worst = (mine - main).abs().max().reshape(1)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        return float(worst.item())

    def lost(self, exc):
        return RankLost(f"{self.label}: a collective with the other ranks failed: another rank died, hung for more "
                        f"than --dist-timeout {self.timeout_s:g} s, or the network failed ({_first_line(exc)})")


def is_collective_failure(exc):
    """Whether ``exc`` came from a collective whose peers are gone (gloo and NCCL raise plain RuntimeErrors)."""
    if isinstance(exc, (RankLost, dist.DistError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(word in text for word in ("gloo", "NCCL", "ProcessGroup", "c10d",
                                                                           "Connection reset", "Connection closed"))


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def from_environment(timeout_s=600.0, environ=None):
    """The World torchrun describes in the environment, or a single process when none of its variables is set."""
    env = os.environ if environ is None else environ
    present = [name for name in LAUNCH_VARIABLES if name in env]
    if not present:
        return World(timeout_s=timeout_s)
    missing = [name for name in LAUNCH_VARIABLES if name not in env]
    if missing:
        raise ValueError(f"a distributed launch needs {', '.join(LAUNCH_VARIABLES)} in the environment; "
                         f"{', '.join(missing)} missing: start with torchrun (torchrun --nproc_per_node N -m ganforge "
                         "train ...)")
    try:
        rank, world_size, local_rank = (int(env[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                         f"{env['RANK']!r}, {env['WORLD_SIZE']!r}, {env['LOCAL_RANK']!r}") from None
    if not (world_size >= 1 and 0 <= rank < world_size and local_rank >= 0):
        raise ValueError(f"RANK {rank} does not fit WORLD_SIZE {world_size} (need 0 <= RANK < WORLD_SIZE)")
    return World(rank, world_size, local_rank, launched=True, timeout_s=timeout_s)


class BatchDraw:
    """Random numbers for this rank's rows of the global batch.

    Each draw is made for the whole global batch from the stream every rank shares, then cut to this rank's rows,
    so every rank's generator advances alike and the numbers do not depend on the number of ranks. In a single
    process the rows are the whole batch and each draw is exactly the plain one.
    """

    def __init__(self, global_batch, world=None, device="cpu"):
        world = world or World()
        self.global_batch = global_batch
        self.rows = world.rows(global_batch)
        self.size = self.rows.stop - self.rows.start
        self.device = device

    def rand(self, *tail, dtype=None):
        return torch.rand(self.global_batch, *tail, device=self.device, dtype=dtype)[self.rows]

    def randn(self, *tail):
        return torch.randn(self.global_batch, *tail, device=self.device)[self.rows]

    def randint(self, low, high, *tail):
        return torch.randint(low, high, (self.global_batch, *tail), device=self.device)[self.rows]


def shard_indices(n, rank, world_size, seed):
    """The dataset rows rank ``rank`` holds: its equal part of a permutation seeded by ``seed``."""
    if world_size == 1:
        return torch.arange(n)
    per_rank = n // world_size
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    return order[rank * per_rank:(rank + 1) * per_rank].sort().values


class _SummedAcrossRanks(torch.autograd.Function):
    """all-reduce (sum) that back-propagates: the gradient of every rank's loss reaches every rank's input."""

    @staticmethod
    def forward(ctx, x):
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone()
        dist.all_reduce(total)
        return total


class SyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch: one differentiable all-reduce of the
    per-channel sums and sums of squares. Its parameters and buffers are BatchNorm's, so checkpoints load into
    either; in eval mode, or in a single process, it is plain BatchNorm. (torch's SyncBatchNorm is GPU-only.)"""

    synchronized = True  # False: this copy's statistics are its own batch's (an EMA of G that no rank trains)

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x):
        if not (self.training and self.synchronized and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels, dims = x.shape[1], [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims),
                           torch.full((1,), x.numel() // channels, dtype=torch.float32, device=x.device)])
        total = _SummedAcrossRanks.apply(local)
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.float()
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / (count - 1).clamp_min(1), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y.to(x.dtype)


def synchronize_batch_norm(module):
    """Replace every BatchNorm in ``module`` by a SyncedBatchNorm holding the same tensors; returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            synced = SyncedBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced.to(next(child.buffers()).device))
            count += 1
        else:
            count += synchronize_batch_norm(child)
    return count


def local_batch_norm_(module):
    """Make every SyncedBatchNorm in ``module`` use its own batch's statistics: for a copy (G's EMA) that rank 0
    alone may run in train mode, where an all-reduce would wait for ranks that never join it."""
    for m in module.modules():
        if isinstance(m, SyncedBatchNorm):
            m.synchronized = False
    return module


def batch_norm_modules(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

