"""dSprites-style procedural re-render (Matthey et al. 2017), rendered on demand.

The exact dSprites factor grid, in the original order with posY varying fastest (the constant
`color` factor is left out because it has a single value):

    shape        3   square, ellipse, heart
    scale        6   linspace(0.5, 1, 6)
    orientation 40   linspace(0, 2*pi, 40)   (0 and 2*pi both present: classes 0 and 39 are the same image)
    posX        32   linspace(0, 1, 32)
    posY        32   linspace(0, 1, 32)

737,280 binary 64x64 images, one channel, uint8 0/255, no anti-aliasing. Flat index = mixed-radix
number of the class indices (strides 245760, 40960, 1024, 32, 1), as in the original .npz.

Geometry (measured from the official sprites):
sprite centre = 64 * (0.25 + 0.5 * pos) px, i.e. 16..48 px; pixel (row i, column j) has its centre
at (j + 0.5, i + 0.5), y pointing down. In the shape's own frame (units of `scale`):
  square   side 20;
  ellipse  26 x 14, long axis horizontal;
  heart    two discs of radius 5 at (+-4.75, -4.25) plus the triangle (+-9.75, -4.25), (0, 9.25):
           lobes up, tip down, about 19.5 wide and 18.5 tall.
The shape turns counter-clockwise on screen by `orientation` about the position point. The
original heart's vertex list was never published, so this is a dSprites-*style* re-render: it
matches the grid, the sizes and positions, not the original bitmaps pixel for pixel.

Rendering is vectorised: every pixel centre of a batch is rotated into its sprite's frame and tested
for membership with a few array comparisons; no per-image drawing calls.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import DataConfig
from .common import check_options, fixed_split
from .labels import LabelInfo
from .procedural import NATIVE_SIZE, ProceduralDataset

FACTOR_NAMES = ["shape", "scale", "orientation", "posX", "posY"]
FACTOR_SIZES = [3, 6, 40, 32, 32]
SHAPE_NAMES = ["square", "ellipse", "heart"]
SQUARE, ELLIPSE, HEART = 0, 1, 2

SQUARE_SIDE = 20.0
ELLIPSE_AXES = (26.0, 14.0)          # full width, full height at scale 1
HEART_LOBE_RADIUS = 5.0
HEART_LOBE_CENTRE = (4.75, -4.25)    # (+-x, y), y down
HEART_TRIANGLE_TOP = -4.25           # y of the triangle's top edge, from x = -9.75 to +9.75
HEART_TRIANGLE_HALF_WIDTH = 9.75
HEART_TIP = 9.25                     # y of the bottom tip at x = 0

# Images rendered per vectorised chunk: bounds the temporary float arrays to a few MB each.
CHUNK = 1024
# Every sprite lies within this distance of its centre at scale 1 (the square's half-diagonal,
# 10 * sqrt(2) = 14.14, is the largest), so a 32 px patch around the centre holds it.
SPRITE_RADIUS = SQUARE_SIDE / 2 * math.sqrt(2.0)
WINDOW = 32


def _label_descriptions() -> list:
    grid = factor_value_grid()
    return [
        LabelInfo("shape", "shape", "categorical", value_names=tuple(SHAPE_NAMES)),
        LabelInfo("scale", "scale", "continuous", values=tuple(grid[1]), value_range=(0.5, 1.0)),
        LabelInfo("orientation", "orientation", "continuous", values=tuple(np.degrees(grid[2])), unit="°",
                  value_range=(0.0, 360.0)),
        LabelInfo("posX", "x", "continuous", values=tuple(grid[3]), value_range=(0.0, 1.0)),
        LabelInfo("posY", "y", "continuous", values=tuple(grid[4]), value_range=(0.0, 1.0)),
    ]


def factor_value_grid() -> list:
    orientation = np.linspace(0.0, 2.0 * math.pi, 40)
    return [
        np.arange(3, dtype=np.float64),            # shape as its class index
        np.linspace(0.5, 1.0, 6),
        orientation,
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    ]


# The labels are the class indices; these say what each one is (real scale, degrees, position 0-1).
LABELS = _label_descriptions()


class DSprites(ProceduralDataset):
    """The dSprites grid rendered on demand. Labels are the factor class indices as float32."""

    channels = 1

    def __init__(self, image_size: int | None = None):
        self.name = "dsprites"
        self._init_grid(FACTOR_NAMES, factor_value_grid(), image_size)
        self.label_names = list(FACTOR_NAMES)
        self.label_kinds = ["categorical"] * len(FACTOR_NAMES)
        self.label_value_names = {"shape": list(SHAPE_NAMES)}
        angles = self.factor_values[2]
        # cos/sin tables; the last orientation (2*pi) reuses the first one's values exactly, so that
        # classes 0 and 39 give bit-identical images (cos(2*pi) and sin(2*pi) are off by 1e-16).
        self._cos = np.cos(angles).astype(np.float32)
        self._sin = np.sin(angles).astype(np.float32)
        self._cos[-1], self._sin[-1] = self._cos[0], self._sin[0]
        self._scales = self.factor_values[1].astype(np.float32)
        self._centres = (NATIVE_SIZE * (0.25 + 0.5 * self.factor_values[3])).astype(np.float32)

    def labels_of(self, classes: np.ndarray) -> np.ndarray:
        return classes.astype(np.float32)

    def render_native(self, classes: np.ndarray) -> np.ndarray:
        out = np.zeros((len(classes), 1, NATIVE_SIZE, NATIVE_SIZE), dtype=np.uint8)
        for start in range(0, len(classes), CHUNK):
            self._render_chunk(classes[start:start + CHUNK], out[start:start + CHUNK, 0])
        return out

    def _render_chunk(self, classes: np.ndarray, out: np.ndarray) -> None:
        """Draw sprites into the zeroed (B, 64, 64) `out`.

        Work happens in a WINDOW x WINDOW patch around each sprite (a quarter of the image), then the
        patches are written into place with one fancy-indexed assignment.
        """
        # Group the batch by shape so that each shape's test runs on a contiguous slice (no copies).
        order = np.argsort(classes[:, 0], kind="stable")
        shape, scale_k, angle_k, x_k, y_k = classes[order].T
        cx, cy = self._centres[x_k], self._centres[y_k]
        # Patch origin: centre - WINDOW/2 rounded down; it stays inside 0..64-WINDOW because the
        # centres lie in 16..48, and the sprite (radius <= SPRITE_RADIUS) stays inside the patch.
        ox = np.floor(cx).astype(np.int64) - WINDOW // 2
        oy = np.floor(cy).astype(np.int64) - WINDOW // 2
        inv_scale = (1.0 / self._scales[scale_k]).astype(np.float32)
        local = np.arange(WINDOW, dtype=np.float32) + 0.5
        # Pixel-centre offsets from the sprite centre in unit-scale shape units; dx along columns, dy rows.
        dx = ((ox - cx).astype(np.float32)[:, None] + local[None, :]) * inv_scale[:, None]
        dy = ((oy - cy).astype(np.float32)[:, None] + local[None, :]) * inv_scale[:, None]
        dx, dy = dx[:, None, :], dy[:, :, None]
        # Undo a counter-clockwise on-screen turn (y points down): shape frame (u, v).
        c, s = self._cos[angle_k][:, None, None], self._sin[angle_k][:, None, None]
        u = c * dx - s * dy
        v = s * dx + c * dy
        mask = np.empty(u.shape, dtype=bool)
        bounds = np.searchsorted(shape, [SQUARE, ELLIPSE, HEART, HEART + 1])
        for shape_id, inside in ((SQUARE, _inside_square), (ELLIPSE, _inside_ellipse), (HEART, _inside_heart)):
            lo, hi = bounds[shape_id], bounds[shape_id + 1]
            if hi > lo:
                mask[lo:hi] = inside(u[lo:hi], v[lo:hi])
        steps = np.arange(WINDOW)
        batch = order[:, None, None]
        out[batch, (oy[:, None] + steps)[:, :, None], (ox[:, None] + steps)[:, None, :]] = mask.view(np.uint8) * np.uint8(255)


def _inside_square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    half = SQUARE_SIDE / 2
    return (np.abs(u) <= half) & (np.abs(v) <= half)


def _inside_ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = ELLIPSE_AXES[0] / 2, ELLIPSE_AXES[1] / 2
    return (u * u) * (1.0 / (a * a)) + (v * v) * (1.0 / (b * b)) <= 1.0


def _inside_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au = np.abs(u)   # the heart is mirror-symmetric about its vertical axis
    lx, ly = HEART_LOBE_CENTRE
    dv = v - ly
    in_lobe = (au - lx) ** 2 + dv * dv <= HEART_LOBE_RADIUS ** 2
    # Triangle: below the top edge and inside the slanted edges that meet at the tip (0, HEART_TIP).
    height = HEART_TIP - HEART_TRIANGLE_TOP
    in_triangle = (v >= HEART_TRIANGLE_TOP) & (au * height <= HEART_TRIANGLE_HALF_WIDTH * (HEART_TIP - v))
    return in_lobe | in_triangle


def load_dsprites(cfg: DataConfig) -> DSprites:
    """dSprites grid; options: none. test_fraction/subset pick fixed indices of the full grid."""
    check_options("dsprites", cfg.options, [])
    ds = DSprites(cfg.image_size)
    ds.train_indices, ds.test_indices = fixed_split(len(ds), cfg.test_fraction, cfg.subset)
    ds.source_note = "procedural dSprites-style re-render (exact factor grid, 737,280 images)"
    return ds

