"""Thumbnails as one PNG sprite sheet: the static site ships it as a file, the app serves it to the map's
hover preview. Point i sits at row i // cols, column i % cols."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

MAX_SHEET_BYTES = 10_000_000  # every file of the static site stays under 10 MB (a Space needs Xet above)
MIN_THUMB = 8                 # a sprite sheet never shrinks its thumbnails below this many pixels


def sprite_sheet(thumbs: np.ndarray, max_bytes: int = MAX_SHEET_BYTES,
                 min_thumb: int = MIN_THUMB, optimize: bool = True) -> tuple[bytes, dict]:
    """(PNG bytes, layout) of thumbnails (N, C, h, w) uint8 in a grid of ceil(sqrt(N)) columns. Thumbnails are
    halved (area average) until the PNG fits in max_bytes. optimize: smallest PNG, several times slower to
    write (worth it for a file that is published, not for one made while a visitor waits)."""
    n, c, h, w = thumbs.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    images = thumbs.astype(np.float32)
    while True:
        th, tw = images.shape[2:]
        grid = np.zeros((rows * th, cols * tw, c), dtype=np.uint8)
        tiles = np.clip(np.round(images), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        for i in range(n):
            r, k = divmod(i, cols)
            grid[r * th:(r + 1) * th, k * tw:(k + 1) * tw] = tiles[i]
        buffer = io.BytesIO()
        Image.fromarray(grid[..., 0] if c == 1 else grid).save(buffer, format="PNG", optimize=optimize)
        data = buffer.getvalue()
        if len(data) < max_bytes or min(th, tw) // 2 < min_thumb:
            return data, {"cols": cols, "rows": rows, "width": tw, "height": th}
        images = images[:, :, : th // 2 * 2, : tw // 2 * 2]
        images = images.reshape(n, c, th // 2, 2, tw // 2, 2).mean(axis=(3, 5))
