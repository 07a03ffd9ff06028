"""What data a run reads, recorded in its checkpoints: a resume that reads other data says so in its changes.

An identity is a plain dict (it travels in a checkpoint loaded with weights_only): where the data came from (the
file's real path, or a built-in set's name), the file's size and modification time, the number of images, a hash of
their pixels and labels, and how they are read ("resident" or "streamed"). The hash covers every image of a set up
to WHOLE_HASH_BYTES and SAMPLED_ROWS evenly spaced images of a bigger one, as (N, C, H, W) pixels: an unchanged
.npy hashes the same resident or streamed.
"""
import hashlib
import os
import time

import numpy as np
import torch

WHOLE_HASH_BYTES = 16 * 2**20
SAMPLED_ROWS = 256
_COMPARED = ("name", "path", "bytes", "modified_ns", "images", "content")  # what makes two identities the same data


def data_identity(dataset, streamed):
    """The identity of ``dataset`` (a Dataset, or a StreamedDataset when ``streamed``) as this run reads it."""
    path = os.path.realpath(dataset.path) if dataset.path else None
    identity = {"name": dataset.name, "path": path, "read": "streamed" if streamed else "resident",
                "images": len(dataset), "content": _content_hash(dataset, streamed)}
    if path is not None and os.path.isfile(path):  # a folder's size and time say nothing of its images
        stat = os.stat(path)
        identity.update(bytes=stat.st_size, modified_ns=stat.st_mtime_ns)
    return identity


def data_changes(saved, now):
    """{field: (was, now)} for what a resume reads differently from its checkpoint's run: "data_path" when the data
    differ (another file, or the same file changed), "stream" when resident and streamed swap (their batches
    differ). Empty when the checkpoint recorded no identity (an older one)."""
    if not saved or not now:
        return {}
    changes = {}
    if any(saved.get(key) != now.get(key) for key in _COMPARED):
        changes["data_path"] = (describe_identity(saved), describe_identity(now))
    if saved.get("read") != now.get("read"):
        changes["stream"] = (saved.get("read"), now.get("read"))
    return changes


def describe_identity(identity):
    """One phrase: "/data/faces.npy (40,000 images, 491,520,128 bytes, modified 2026-12-04 22:50:01 UTC, content
    3f2a9c81d0e4)"."""
    facts = [f"{identity.get('images', 0):,} images"]
    if identity.get("bytes") is not None:
        facts.append(f"{identity['bytes']:,} bytes")
    if identity.get("modified_ns") is not None:
        moment = time.gmtime(identity["modified_ns"] / 1e9)
        facts.append(f"modified {time.strftime('%Y-%m-%d %H:%M:%S', moment)} UTC")
    facts.append(f"content {identity.get('content', '?')}")
    return f"{identity.get('path') or identity.get('name')} ({', '.join(facts)})"


def hashed_rows(count, row_bytes):
    """The images the content hash reads: all of a small set, SAMPLED_ROWS evenly spaced ones of a big one."""
    if count * row_bytes <= WHOLE_HASH_BYTES:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, SAMPLED_ROWS).round().astype(np.int64))


def _content_hash(dataset, streamed):
    digest = hashlib.blake2b(digest_size=8)
    if streamed:
        rows = hashed_rows(len(dataset), dataset.image_bytes)
        fd = os.open(dataset.path, os.O_RDONLY)
        try:
            pixels = dataset.read_rows(rows, fd)
        finally:
            os.close(fd)
    else:
        row_bytes = dataset.pixels[:1].numel() * dataset.pixels.element_size()
        rows = hashed_rows(len(dataset), row_bytes)
        pixels = dataset.pixels if len(rows) == len(dataset) else dataset.pixels[torch.from_numpy(rows)]
    digest.update(pixels.contiguous().numpy())
    if dataset.labels is not None:
        digest.update(dataset.labels.contiguous().numpy())
    return digest.hexdigest()
