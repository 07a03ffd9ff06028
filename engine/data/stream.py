"""Streaming: training batches read from a uint8 .npy file on disk while the steps run, for data that does not fit.

A streamed set is never loaded: `open_streamed_npy` reads the array's header, and `BatchStream` has worker
processes read each batch's rows (`os.pread`, one contiguous block per image: nothing is memory-mapped, so the
process holds only the batches in flight) into pinned host memory when training on CUDA, ahead of the steps.
The trainer copies each into the steps' static input buffer (asynchronously on CUDA, so captured graphs replay with
no host sync).

Which rows batch k holds is a pure function of (seed, k): every rank draws the whole global batch's indices from
the same seeded stream and keeps its rows of it, indices into its shard, as the resident path draws. A run
resumed at iteration i starts at batch i * (batches per iteration) and reads what the uninterrupted run read.
"""
import itertools
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from ._common import DataError

# mixed into the seed of the batch-index stream, so it is not the stream of any other use of the seed
_STREAM_SALT = 0x5EED5


@dataclass
class StreamedDataset:
    """What the trainer needs of a dataset it streams: its shape and size (the pixels stay on disk)."""
    name: str
    path: str
    count: int
    image_shape: tuple        # (H, W, C) as stored
    channels_first: bool      # stored (N, C, H, W) rather than (N, H, W[, C])
    data_offset: int          # bytes before the first image
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
    data = StreamedDataset("npy", path, int(shape[0]), image_shape, channels_first, offset)
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
        if self.fd is None:
            self.fd = os.open(self.data.path, os.O_RDONLY)
        rows = stream_batch_rows(self.seed, batch_number, self.shard, self.global_batch, self.rank_rows)
        return self.data.read_rows(rows, self.fd)

    def __len__(self):  # never exhausted: the sampler below counts on from the start batch
        return 2 ** 62


class _CountFrom(torch.utils.data.Sampler):
    def __init__(self, start):
        self.start = start

    def __iter__(self):
        return itertools.count(self.start)


class BatchStream:
    """Batches of a StreamedDataset, read ``prefetch`` ahead by ``workers`` processes, in batch-number order.

    ``fill(buffer, batch_number)`` copies batch ``batch_number`` into the static buffer; asking for another number
    than the next one (a resume, a rollback) restarts the workers there. ``wait_seconds`` counts the host's time
    blocked on the workers: the run is input-bound when it is a large share of the training time."""

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
        self.batches, self.next_number = iter(loader), batch_number

    def fill(self, buffer, batch_number):
        if batch_number != self.next_number:
            self._start(batch_number)
        began = time.perf_counter()
        batch = next(self.batches)
        waited = time.perf_counter() - began
        self.wait_seconds += waited
        self.total_wait_seconds += waited
        buffer.copy_(batch, non_blocking=True)  # pinned host memory -> device without a host sync
        self.next_number += 1

    def read_and_reset_wait(self):
        seconds, self.wait_seconds = self.wait_seconds, 0.0
        return seconds

    def close(self):
        if self.batches is not None:
            del self.batches  # stops the worker processes
            self.batches = None
