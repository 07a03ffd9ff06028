"""Streaming: training batches read from a uint8 .npy file on disk while the steps run, for data that does not fit.

A streamed set is never loaded: `open_streamed_npy` reads the array's header, and `BatchStream` has worker
processes read each batch's rows (`os.pread`, one contiguous block per image: nothing is memory-mapped, so the
process holds only the batches in flight) into pinned host memory when training on CUDA, ahead of the steps.
The trainer copies each into the steps' static input buffer (asynchronously on CUDA, so captured graphs replay with
no host sync).

Which rows batch k holds is a pure function of (seed, k): every rank draws the whole global batch's indices from
the same seeded stream and keeps its rows of it, indices into its shard. A run resumed at iteration i starts at
batch i * (batches per iteration) and reads what the uninterrupted run read. The resident path draws its rows on the
device, from the training's random stream: the two read other batches, so a resume that switches between them is
reported as a change (engine.data.identity).

The file must stay as it was opened for the whole run: every batch checks its size, modification time and inode,
and a change, a short read or a data worker's death stops the run with one line (StreamFailed).
"""
import itertools
import os
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from ._common import DataError

# mixed into the seed of the batch-index stream, so it is not the stream of any other use of the seed
_STREAM_SALT = 0x5EED5


class StreamFailed(OSError):
    """Reading a streamed dataset failed mid-run: the file changed, shrank or vanished, or a data worker process
    died. An OSError, as a failed write is: the run stops with one line, its checkpoints intact."""


@dataclass
class StreamedDataset:
    """What the trainer needs of a dataset it streams: its shape and size (the pixels stay on disk)."""
    name: str
    path: str
    count: int
    image_shape: tuple        # (H, W, C) as stored
    channels_first: bool      # stored (N, C, H, W) rather than (N, H, W[, C])
    data_offset: int          # bytes before the first image
    opened_as: tuple = None   # file_state(path) when opened: the file must stay so for the whole run
    labels = None
    num_classes = 0
    class_names = None
    attributes = None
    attribute_names = None

    @property
    def data_shape(self):
        h, w, c = self.image_shape
        return (c, h, w)

    @property
    def image_bytes(self):
        return int(np.prod(self.image_shape))

    def __len__(self):
        return self.count

    def read_rows(self, rows, fd):
        """uint8 (len(rows), C, H, W) of the given image rows, read with one pread each (sorted, so the disk reads
        forward), in the order asked."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.image_bytes), dtype=np.uint8)
        for i in order:
            block = os.pread(fd, self.image_bytes, self.data_offset + int(rows[i]) * self.image_bytes)
            if len(block) != self.image_bytes:
                raise DataError(f"{self.path}: the file ended inside image {int(rows[i])} (truncated after it "
                                "was opened?)")
            out[i] = np.frombuffer(block, dtype=np.uint8)
        if self.channels_first:
            c, h, w = self.data_shape
            return torch.from_numpy(out.reshape(len(rows), c, h, w))
        h, w, c = self.image_shape
        return torch.from_numpy(out.reshape(len(rows), h, w, c)).permute(0, 3, 1, 2).contiguous()


def open_streamed_npy(path, image_size=None, channels=None):
    """A StreamedDataset over an uint8 image array saved by numpy.save: (N, H, W), (N, H, W, C) or (N, C, H, W),
    C in {1, 3}, C order. Only the header is read."""
    path = str(path)
    if not path.endswith(".npy"):
        raise DataError(f"dataset 'npy': streaming reads an uncompressed .npy array (numpy.save); {path} is not "
                        "one (load an .npz resident, or save its images with numpy.save)")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
            opened_as = _state_of(os.fstat(f.fileno()))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the .npy header ({type(err).__name__}: {err}); save the array "
                        "with numpy.save") from None
    if dtype != np.uint8:
        raise DataError(f"{path}: streaming reads uint8 pixels, this array is {dtype}; save the images as uint8 "
                        "0..255 (or train on it resident: --stream off)")
    if fortran:
        raise DataError(f"{path}: the array is stored in Fortran order; save it in C order (numpy.save of "
                        "np.ascontiguousarray(images))")
    if len(shape) == 3:
        image_shape, channels_first = (shape[1], shape[2], 1), False
    elif len(shape) == 4 and shape[-1] in (1, 3):
        image_shape, channels_first = tuple(shape[1:]), False
    elif len(shape) == 4 and shape[1] in (1, 3):
        image_shape, channels_first = (shape[2], shape[3], shape[1]), True
    else:
        raise DataError(f"{path}: image array of shape {shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
                        "with C 1 or 3")
    if shape[0] == 0:
        raise DataError(f"{path}: the dataset holds no images")
    data = StreamedDataset("npy", path, int(shape[0]), image_shape, channels_first, offset, opened_as)
    expected = offset + data.count * data.image_bytes
    if os.path.getsize(path) < expected:
        raise DataError(f"{path}: the file holds {os.path.getsize(path):,} bytes, its header promises "
                        f"{expected:,}; the file is truncated")
    h, w, c = image_shape
    if image_size is not None and (h, w) != (image_size, image_size):
        raise DataError(f"{path}: streamed images are read as stored ({h}x{w}); --image-size {image_size} would "
                        "resize every batch: save the array at that size, or train resident (--stream off)")
    if channels is not None and channels != c:
        raise DataError(f"{path}: streamed images are read as stored ({c} channel(s)); save them with "
                        f"{channels}, or train resident (--stream off)")
    return data


def _state_of(stat):
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def file_state(path):
    """(size, modification time in ns, inode) of the file at ``path``: what tells a rewrite or a replacement."""
    return _state_of(os.stat(path))


def describe_change(path, opened_as):
    """One line saying how the file at ``path`` differs from its state ``opened_as``, or None if it does not (or
    its state was not recorded)."""
    if opened_as is None:
        return None
    try:
        now = file_state(path)
    except FileNotFoundError:
        return f"{path} was removed while the run was reading it"
    except OSError as err:
        return f"{path}: cannot check it while the run reads it ({err.strerror or err})"
    if now == opened_as:
        return None
    (size, _, inode), (was_size, _, was_inode) = now, opened_as
    how = "replaced by another file" if inode != was_inode else \
        f"changed from {was_size:,} to {size:,} bytes" if size != was_size else "modified"
    return f"{path} was {how} while the run was reading it; a streamed file must stay as it is for the whole run"


def stream_batch_rows(seed, batch_number, shard, global_batch, rank_rows):
    """The dataset rows of batch ``batch_number`` this rank trains on: global-batch indices into the shard, drawn
    from the (seed, batch number) stream every rank shares, cut to this rank's rows."""
    draw = np.random.default_rng([seed, _STREAM_SALT, batch_number])
    return shard[draw.integers(0, len(shard), global_batch)[rank_rows]]


class _BatchesOnDisk(torch.utils.data.Dataset):
    """Item k: batch k's pixels, read by a DataLoader worker (each worker opens the file once)."""

    def __init__(self, data, seed, shard, global_batch, rank_rows):
        self.data, self.seed, self.shard = data, seed, np.asarray(shard, dtype=np.int64)
        self.global_batch, self.rank_rows = global_batch, rank_rows
        self.fd = None

    def __getitem__(self, batch_number):
        # A failed read comes back as a value: raised in a worker, it would reach the run wrapped in a traceback's text
        try:
            if self.fd is None:
                self.fd = os.open(self.data.path, os.O_RDONLY)
            rows = stream_batch_rows(self.seed, batch_number, self.shard, self.global_batch, self.rank_rows)
            return self.data.read_rows(rows, self.fd)
        except DataError as err:
            return _ReadFailed(str(err))
        except OSError as err:
            return _ReadFailed(f"{self.data.path}: cannot read it ({err.strerror or err})")

    def __len__(self):  # never exhausted: the sampler below counts on from the start batch
        return 2 ** 62


@dataclass
class _ReadFailed:
    message: str


class _CountFrom(torch.utils.data.Sampler):
    def __init__(self, start):
        self.start = start

    def __iter__(self):
        return itertools.count(self.start)


class BatchStream:
    """Batches of a StreamedDataset, read ``prefetch`` ahead by ``workers`` processes, in batch-number order.

    ``fill(buffer, batch_number)`` copies batch ``batch_number`` into the static buffer; asking for another number
    than the next one (a resume, a rollback), or another seed, restarts the workers there. ``wait_seconds`` counts
    the host's time blocked on the workers: the run is input-bound when it is a large share of the training time.
    A batch is used only if the file is still as it was opened; any failure raises StreamFailed."""

    def __init__(self, data, seed, shard, global_batch, rank_rows, device, workers=2, prefetch=4):
        self.source = _BatchesOnDisk(data, seed, shard, global_batch, rank_rows)
        self.device, self.workers, self.prefetch = torch.device(device), workers, prefetch
        self.next_number, self.batches = None, None
        self.wait_seconds = self.total_wait_seconds = 0.0

    def _start(self, batch_number):
        self.close()
        loader = torch.utils.data.DataLoader(
            self.source, batch_size=None, sampler=_CountFrom(batch_number), num_workers=self.workers,
            prefetch_factor=self.prefetch if self.workers else None, pin_memory=self.device.type == "cuda",
            generator=torch.Generator())  # its own: starting a loader draws a seed, never from the training stream
        # torch's loader reports a dead worker from a SIGCHLD handler, raised in whatever the main thread runs then
        # (a step, a checkpoint write, a subprocess's start). Without the handler the death is found in next(),
        # within the loader's status check (5 s), where the run stops cleanly.
        main_thread = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGCHLD) if main_thread and hasattr(signal, "SIGCHLD") else None
        self.batches, self.next_number = iter(loader), batch_number
        if handler is not None:
            signal.signal(signal.SIGCHLD, handler)

    def fill(self, buffer, batch_number, seed=None):
        """Copy batch ``batch_number`` of the (``seed``, batch) stream into ``buffer`` (seed None: the one the
        stream was made with)."""
        if seed is not None and seed != self.source.seed:
            self.source.seed, self.next_number = seed, None  # the workers restart with it
        if batch_number != self.next_number:
            self._start(batch_number)
        began = time.perf_counter()
        batch = self._next_batch()
        waited = time.perf_counter() - began
        self.wait_seconds += waited
        self.total_wait_seconds += waited
        buffer.copy_(batch, non_blocking=True)  # pinned host memory -> device without a host sync
        self.next_number += 1

    def _next_batch(self):
        """The next batch, once the file is known to be as it was opened; else StreamFailed, the workers stopped."""
        data = self.source.data
        try:
            batch = next(self.batches)
        except Exception as err:  # the loader's own failures: a worker killed, out of memory, its connection lost
            self.close()
            cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StreamFailed(describe_change(data.path, data.opened_as) or
                               f"{data.path}: a data worker process failed ({cause})") from None
        failure = describe_change(data.path, data.opened_as)  # checked after the read: a change during it counts
        if failure is None and isinstance(batch, _ReadFailed):
            failure = batch.message
        if failure is not None:
            self.close()
            raise StreamFailed(failure)
        return batch

    def read_and_reset_wait(self):
        seconds, self.wait_seconds = self.wait_seconds, 0.0
        return seconds

    def close(self):
        if self.batches is not None:
            del self.batches  # stops the worker processes
            self.batches = None
