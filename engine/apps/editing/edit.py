"""The edit command: encode real images, edit, decode and measure, by class or by attribute as the model was
trained (class_edits, attribute_edits)."""
import math

from .attribute_edits import run_attribute_edit
from .class_edits import run_class_edit
from .inputs import EditError, load_conditional_generator


def run_edit(ckpt_path, out_dir, input_path=None, label=None, split="test", count=500, encoder="auto",
             steps=10, strengths=(-3, -1.5, 0, 1.5, 3), rows=8, use_ema=True, seed=0, device="cpu",
             kernels="auto", progress=True, settings=None):
    """Encode, edit, decode and measure; write edit_grid.png and edit.json into ``out_dir``. A model conditioned on
    attributes edits those: ``settings`` ({name: value}) in one edit, or without them each attribute flipped."""
    if count < 1:
        raise EditError(f"--count must be >= 1, got {count}")
    if steps < 0:
        raise EditError(f"--steps must be >= 0, got {steps}")
    if rows < 1:
        raise EditError(f"--rows must be >= 1 (images shown in the grid), got {rows}")
    if not strengths or not all(math.isfinite(s) for s in strengths):
        shown = ",".join(f"{s:g}" for s in strengths) or "none"
        raise EditError(f"--strengths must be one or more finite numbers, comma-separated, got {shown}")
    G, cfg, num_classes = load_conditional_generator(ckpt_path, device, use_ema, kernels)
    if G.attribute_names:
        return run_attribute_edit(ckpt_path, G, cfg, out_dir, settings, input_path, split, count, encoder, steps,
                                  rows, use_ema, seed, device, progress)
    return run_class_edit(ckpt_path, G, cfg, num_classes, out_dir, input_path, label, split, count, encoder, steps,
                          strengths, rows, use_ema, seed, device, progress, settings)
