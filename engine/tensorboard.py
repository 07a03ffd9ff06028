"""Optional TensorBoard output (`--tensorboard`): the logged scalars, the sample grids and FID of a run.

Written through torch.utils.tensorboard into <out>/tensorboard; `tensorboard --logdir runs` shows every run.
The tensorboard package is an optional extra: without it, asking for TensorBoard fails before training starts.
"""
import numpy as np

from .images import image_grid

INSTALL_HINT = "pip install 'ganforge[tensorboard]' (or pip install tensorboard)"


class TensorBoardLog:
    def __init__(self, log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises ImportError when the tensorboard package is missing
            raise ValueError(f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL_HINT}") \
                from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, record, prefix="train"):
        """Every finite number of a log record except the iteration, at that iteration."""
        step = record["iteration"]
        for key, value in record.items():
            if key != "iteration" and isinstance(value, (int, float)) and np.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()

    def samples(self, images, iteration, nrow=None):
        """A grid of generated images (N, C, H, W) in [-1, 1]; 2-D point samples have no image and are skipped."""
        if images.dim() != 4:
            return
        self.writer.add_image("samples", image_grid(images, nrow), iteration, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()
