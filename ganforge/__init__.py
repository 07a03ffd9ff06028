"""ganforge: a lean, kernel-optimized GAN training engine.

The Python API, for scripts and notebooks:

    from ganforge import TrainConfig, train, sample, score, load_generator

    summary = train(TrainConfig(iterations=200, out="runs/api", fid_samples=500))
    images = sample("runs/api/checkpoint.pt", n=16)          # (16, 1, 28, 28) in [-1, 1]
    print(score("runs/api/checkpoint.pt", n_samples=500))    # FID against held-out digits

The subpackages are `ganforge.kernels` (Triton ops beside their references), `ganforge.models`,
`ganforge.engine` (training, evaluation, checkpoints) and `ganforge.bench`. Names are loaded on first use, so
`import ganforge` and the command's `--help` stay fast.
"""
import importlib

__version__ = "0.2.0"

# public name -> module that defines it
_API = {
    "TrainConfig": "ganforge.engine.config",
    "train": "ganforge.engine.api",
    "sample": "ganforge.engine.api",
    "score": "ganforge.engine.api",
    "load_generator": "ganforge.engine.api",
    "load_checkpoint": "ganforge.engine.api",
    "encode_images": "ganforge.engine.apps.editing.codes",  # a VAE-GAN's encoder: images -> (mu, log sigma^2)
    "decode_codes": "ganforge.engine.apps.editing.codes",   # a generator on given codes
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'ganforge' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
