"""What an edit writes into its folder: edit_grid.png (one row of tiles per image) and edit.json (the report)."""
from pathlib import Path

from ...images import image_grid
from ...io import atomic_write, atomic_write_json

GRID_FILE = "edit_grid.png"
REPORT_FILE = "edit.json"


def write_edit(out_dir, tiles, per_row, report):
    """``tiles`` (N, C, H, W), ``per_row`` to a row, as GRID_FILE and ``report`` as REPORT_FILE into ``out_dir``."""
    from PIL import Image

    out_dir = Path(out_dir)
    pixels = image_grid(tiles, nrow=per_row)
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    atomic_write(out_dir / GRID_FILE, lambda f: image.save(f, format="PNG"))
    atomic_write_json(out_dir / REPORT_FILE, report)
    return report
