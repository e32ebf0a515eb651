"""Smileys: a procedural 64x64 RGB face set on a discrete factor grid, rendered on demand.

Factor grid (last factor varies fastest; flat index = mixed-radix number of the class indices):

    factor   levels  real value (the label)                         label kind
    smile      10    linspace(-1, 1, 10): mouth curvature,          continuous
                     -1 = full frown, +1 = full smile (0 is not on the grid: every face smiles or frowns)
    glasses     2    0 / 1                                           binary
    hue         8    k / 8: face colour hue in [0, 1) (circular)     continuous
    size        4    linspace(0.7, 1, 4): face radius R = 20 * size px   continuous
    pos_x      10    linspace(0, 1, 10): face centre x = 22 + 20 * pos_x px   continuous
    pos_y      10    linspace(0, 1, 10): face centre y = 22 + 20 * pos_y px   continuous

64,000 images. Labels are the real factor values above (not the class indices), in this order.

Layout, in units of the face radius R, relative to the face centre, y pointing down (`LAYOUT`):
  face      filled ellipse, half-width 0.9 R, half-height R, colour HSV(hue, 0.5, 0.95)
  eyes      dark discs of radius 0.1 at (+-0.36, -0.22)
  glasses   two rings around the eyes (centre-line radius 0.2, thickness 0.08) joined by a bridge at
            y = -0.22 between x = -0.16 and +0.16
  mouth     a thick parabola arc (thickness 0.12) over x in [-0.42, 0.42]: middle at
            y = 0.50 + 0.20 * smile, corners at y = 0.50 - 0.20 * smile (smile > 0: corners up).
            The curvature moves the stroke by up to +-4 px on the largest face: a smile a 10-latent
            VAE cannot afford to ignore (an earlier, 2.4 px version was encoded only weakly).

Each factor changes only the pixels it claims (tests check this on rendered pairs):
  smile    only pixels of the mouth box  |x| <= 0.48 R, 0.171 R <= y <= 0.829 R (+ 1 px of anti-aliasing)
  glasses  only pixels of the eye band   |x| <= 0.84 R, -0.46 R <= y <= 0.02 R (+ 1 px)
  hue      only face pixels (inside the face ellipse + 1 px); eyes, mouth, glasses and background keep
           their fixed colours
The eye band and the mouth box never overlap, at every size.
Edges are anti-aliased analytically: each layer's coverage is clip(0.5 - signed distance, 0, 1),
with the signed distance of the shape in pixels (exact for discs/rings/segments, first-order for the
ellipse and the parabola).

Option `version` (default 1) selects the renderer. Version 2 draws the mouth twice as thick (0.24 R) at the
exact distance from the arc (an even stroke with round ends; version 1's first-order distance would paint
spurs at the steep ends of a stroke that thick): the smile then moves 1.7 times the pixels (summed absolute
change from frown to smile). A β-TCVAE trained on the whole version-1 grid with σ = 0.1 leaves the thin
mouth out of its latent space altogether (its reconstructions draw one blurred mouth for every smile);
the thicker mouth gives the smile more weight in the reconstruction, though whether a β-TCVAE learns it
still depends on the run. Everything else is drawn as in version 1, so version-1 runs render exactly as
they were trained. Version 2's mouth box is |x| <= 0.54 R, 0.18 R <= y <= 0.82 R, still clear of the eye
band.

Version 3 keeps version 2's stroke and bends it further (corners and middle at y = 0.44 -+ 0.26 * smile)
in a near-black colour (30, 10, 20), like the eyes. A model that does not encode the smile pays for the
pixels the smile moves; in a Gaussian reconstruction term (σ = 0.1) that cost, the variance across the
10 smile levels with everything else fixed summed over pixels and divided by 2σ², is 1,962 nats per face
on version 3, 1,110 on version 2 and 721 on version 1 (mean over 300 random faces). None of seven
β-TCVAE trainings on version 2 (σ = 0.1, β = 6; three without a regulariser warm-up, four with one) had
learnt the smile when stopped after 3,100 to 9,300 steps; on version 3 both trainings tried (the same
settings, seeds 0 and 1) reconstruct frowns as frowns by step 4,000. Version 3's mouth box is
|x| <= 0.54 R, 0.06 R <= y <= 0.82 R, clear of the eye band (which ends at y = 0.02 R), and a full frown
stays inside the face.

Option `correlate` (documented in `correlated_index_set`): `{"correlate": ["smile", "glasses"],
"correlation": 0.8}` makes the dataset's index set (train_indices and test_indices) a deterministic
subsample of the grid in which the two attributes, each binarised at the midpoint of its value range
(smile > 0, glasses = 1), have the given phi correlation: P(glasses | smile > 0) = (1 + 0.8) / 2 = 0.9 and
P(glasses | smile <= 0) = 0.1. The grid itself (len, render, index_of, factor sampling for the
disentanglement metrics) is unchanged; only which images training and export see. Its purpose is to
show attribute-vector leakage (a "smile" vector that also adds glasses) and its correction.

Option `correlate_split` says which split is resampled: "all" (the default, above) or "test". With "test",
training sees the whole grid's training split, every combination equally often, and only the test faces
(those export encodes and labels, so those the attribute vectors come from) are resampled to the stated
correlation: a biased labelled set beside an unbiased unlabelled corpus. A model trained on correlated faces
has no reason to keep two correlated attributes apart (a β-TCVAE's total-correlation penalty makes its
latents independent under the *training* distribution), so a model meant both to disentangle smile from
glasses and to show the leakage of the labelled set's smile vector is trained this way.
"""
from __future__ import annotations

import colorsys

import numpy as np

from ..config import DataConfig
from ..errors import UserError
from .common import check_options, fixed_split, take_subset
from .base import split_indices
from .labels import LabelInfo
from .procedural import NATIVE_SIZE, ProceduralDataset

FACTOR_NAMES = ["smile", "glasses", "hue", "size", "pos_x", "pos_y"]
LABEL_KINDS = ["continuous", "binary", "continuous", "continuous", "continuous", "continuous"]
# The labels are the real factor values (see the table above).
LABELS = [
    LabelInfo("smile", "smile", "continuous", value_range=(-1.0, 1.0)),
    LabelInfo("glasses", "glasses", "binary", value_names=("no glasses", "glasses")),
    LabelInfo("hue", "hue", "continuous", value_range=(0.0, 1.0)),
    LabelInfo("size", "size", "continuous", value_range=(0.7, 1.0)),
    LabelInfo("pos_x", "x", "continuous", value_range=(0.0, 1.0)),
    LabelInfo("pos_y", "y", "continuous", value_range=(0.0, 1.0)),
]

FACE_RADIUS = 20.0        # px at size 1
POS_MIN, POS_SPAN = 22.0, 20.0
CORRELATION_SEED = 2024

# Geometry in units of the face radius R, y down (see the module docstring), per dataset version.
LAYOUT = {
    "face_half_width": 0.9,
    "face_half_height": 1.0,
    "eye_x": 0.36,
    "eye_y": -0.22,
    "eye_radius": 0.10,
    "ring_radius": 0.20,
    "ring_thickness": 0.08,
    "mouth_y": 0.50,
    "mouth_half_width": 0.42,
    "mouth_bend": 0.20,
    "mouth_thickness": 0.12,
}
# Version 2: the mouth stroke twice as thick, drawn with its exact distance (see the module docstring).
# Version 3: version 2's stroke, bent further, a little higher, and darker (see the module docstring).
LAYOUTS = {1: LAYOUT, 2: {**LAYOUT, "mouth_thickness": 0.24},
           3: {**LAYOUT, "mouth_thickness": 0.24, "mouth_bend": 0.26, "mouth_y": 0.44}}
VERSIONS = tuple(LAYOUTS)
# How a dataset's source note names each version.
VERSION_NOTES = {1: "", 2: " version 2 (thick mouth)", 3: " version 3 (thick, dark, deeply bent mouth)"}

BACKGROUND = (235.0, 235.0, 235.0)
EYE_COLOUR = (30.0, 30.0, 40.0)
MOUTH_COLOURS = {1: (110.0, 20.0, 35.0), 2: (110.0, 20.0, 35.0), 3: (30.0, 10.0, 20.0)}
GLASSES_COLOUR = (15.0, 15.0, 15.0)
FACE_SATURATION, FACE_VALUE = 0.5, 0.95

CHUNK = 512
SIZE_LEVELS = np.linspace(0.7, 1.0, 4)
R_MAX = FACE_RADIUS * SIZE_LEVELS.max()   # px: the windows below are sized for the largest face


def factor_value_grid() -> list:
    return [
        np.linspace(-1.0, 1.0, 10),
        np.array([0.0, 1.0]),
        np.arange(8) / 8.0,
        SIZE_LEVELS,
        np.linspace(0.0, 1.0, 10),
        np.linspace(0.0, 1.0, 10),
    ]


def face_geometry(size: np.ndarray, pos_x: np.ndarray, pos_y: np.ndarray) -> tuple:
    """(centre x px, centre y px, face radius R px) for real factor values."""
    return POS_MIN + POS_SPAN * pos_x, POS_MIN + POS_SPAN * pos_y, FACE_RADIUS * size


class Smileys(ProceduralDataset):
    channels = 3

    def __init__(self, image_size: int | None = None, version: int = 1):
        if isinstance(version, bool) or version not in VERSIONS:
            raise UserError(f"smileys: option 'version' must be one of {', '.join(map(str, VERSIONS))}, "
                            f"got {version!r}")
        self.name = "smileys"
        self.version = version
        self.layout = LAYOUTS[version]
        self.face_box, self.eye_box, self.mouth_box = (region_box(name, version) for name in ("face", "eyes", "mouth"))
        self._init_grid(FACTOR_NAMES, factor_value_grid(), image_size)
        self.label_names = list(FACTOR_NAMES)
        self.label_kinds = list(LABEL_KINDS)
        self._face_rgb = np.array([colorsys.hsv_to_rgb(h, FACE_SATURATION, FACE_VALUE)
                                   for h in self.factor_values[2]], dtype=np.float32) * 255.0
        # Grid indices the dataset's split draws from: all of them unless the `correlate` option is set.
        self.index_set = np.arange(len(self), dtype=np.int64)

    def labels_of(self, classes: np.ndarray) -> np.ndarray:
        return self.factor_values_of(classes).astype(np.float32)

    def render_native(self, classes: np.ndarray) -> np.ndarray:
        out = np.empty((len(classes), 3, NATIVE_SIZE, NATIVE_SIZE), dtype=np.uint8)
        for start in range(0, len(classes), CHUNK):
            part = classes[start:start + CHUNK]
            out[start:start + len(part)] = self._render_chunk(part)
        return out

    def _render_chunk(self, classes: np.ndarray) -> np.ndarray:
        """(B, 3, 64, 64) uint8. Each layer is drawn only inside a fixed-size window around it."""
        values = self.factor_values_of(classes).astype(np.float32)
        smile, glasses, _, size, pos_x, pos_y = values.T
        cx, cy, R = face_geometry(size, pos_x, pos_y)
        L = self.layout
        background = np.asarray(BACKGROUND, dtype=np.float32)[None, :, None, None]
        image = np.empty((len(classes), 3, NATIVE_SIZE, NATIVE_SIZE), dtype=np.float32)
        image[:] = background

        face = _Window(cx, cy, R, self.face_box)
        x, y, R3 = face.x, face.y, face.R
        patch = np.broadcast_to(background, (len(classes), 3) + face.shape).copy()   # only background so far
        _paint(patch, _coverage(_ellipse_distance(x, y, L["face_half_width"] * R3, L["face_half_height"] * R3)),
               self._face_rgb[classes[:, 2]])
        face.scatter(image, patch)

        band = _Window(cx, cy, R, self.eye_box)
        x, y, R3 = band.x, band.y - L["eye_y"] * band.R, band.R
        patch = band.gather(image)
        left_eye = _circle_distance(x + L["eye_x"] * R3, y)
        right_eye = _circle_distance(x - L["eye_x"] * R3, y)
        _paint(patch, _coverage(np.minimum(left_eye, right_eye) - L["eye_radius"] * R3), EYE_COLOUR)
        rings = np.minimum(np.abs(left_eye - L["ring_radius"] * R3), np.abs(right_eye - L["ring_radius"] * R3))
        bridge = _segment_distance(x, y, (L["eye_x"] - L["ring_radius"]) * R3)
        # Faces without glasses get coverage 0 (the same arithmetic for the whole batch, no branching).
        lens = _coverage(np.minimum(rings, bridge) - L["ring_thickness"] / 2 * R3) * glasses[:, None, None]
        _paint(patch, lens, GLASSES_COLOUR)
        band.scatter(image, patch)

        mouth = _Window(cx, cy, R, self.mouth_box)
        x, y, R3 = mouth.x, mouth.y - L["mouth_y"] * mouth.R, mouth.R
        patch = mouth.gather(image)
        arc_distance = _arc_distance if self.version == 1 else _arc_distance_exact
        arc = arc_distance(x, y, L["mouth_half_width"] * R3, (L["mouth_bend"] * smile)[:, None, None] * R3)
        _paint(patch, _coverage(arc - L["mouth_thickness"] / 2 * R3), MOUTH_COLOURS[self.version])
        mouth.scatter(image, patch)
        return np.rint(image, out=image).astype(np.uint8)


class _Window:
    """A fixed-size pixel window per image that holds one layer (a box in face units plus a margin).

    `x`, `y` are the pixel-centre offsets from the face centre inside the window, shapes (B, 1, w) and
    (B, h, 1); `gather`/`scatter` move the window's pixels out of and back into a (B, 3, 64, 64) image.
    """

    MARGIN = 2.0   # px beyond the box: covers the 0.5 px of anti-aliasing and the rounding of the origin

    def __init__(self, cx: np.ndarray, cy: np.ndarray, R: np.ndarray, box: tuple):
        x0, x1, y0, y1 = box
        w = min(NATIVE_SIZE, int(np.ceil((x1 - x0) * R_MAX + 2 * self.MARGIN)) + 1)
        h = min(NATIVE_SIZE, int(np.ceil((y1 - y0) * R_MAX + 2 * self.MARGIN)) + 1)
        ox = np.clip(np.floor(cx + x0 * R - self.MARGIN).astype(np.int64), 0, NATIVE_SIZE - w)
        oy = np.clip(np.floor(cy + y0 * R - self.MARGIN).astype(np.int64), 0, NATIVE_SIZE - h)
        self.x = (ox.astype(np.float32)[:, None] + (np.arange(w, dtype=np.float32) + 0.5) - cx[:, None])[:, None, :]
        self.y = (oy.astype(np.float32)[:, None] + (np.arange(h, dtype=np.float32) + 0.5) - cy[:, None])[:, :, None]
        self.R = R[:, None, None]
        self.shape = (h, w)
        self._index = (np.arange(len(cx)), oy, ox)

    def _views(self, image: np.ndarray, writeable: bool = False) -> np.ndarray:
        # (B, 3, 64-h+1, 64-w+1, h, w) view of every h x w window; indexing it with one (image, row,
        # column) triple per image copies whole windows, far faster than per-pixel fancy indexing.
        return np.lib.stride_tricks.sliding_window_view(image, self.shape, axis=(2, 3), writeable=writeable)

    def gather(self, image: np.ndarray) -> np.ndarray:
        """(B, 3, h, w) copy of the windows."""
        b, oy, ox = self._index
        return np.ascontiguousarray(self._views(image)[b, :, oy, ox])

    def scatter(self, image: np.ndarray, patch: np.ndarray) -> None:
        # Windows of different images never overlap, so writing through the strided view is safe.
        b, oy, ox = self._index
        self._views(image, writeable=True)[b, :, oy, ox] = patch


def region_box(name: str, version: int = 1) -> tuple:
    """(x_min, x_max, y_min, y_max) in face units of the face, the eye band or the mouth."""
    L = LAYOUTS[version]
    if name == "face":
        return -L["face_half_width"], L["face_half_width"], -L["face_half_height"], L["face_half_height"]
    if name == "eyes":
        reach = L["ring_radius"] + L["ring_thickness"] / 2
        return -(L["eye_x"] + reach), L["eye_x"] + reach, L["eye_y"] - reach, L["eye_y"] + reach
    half_t = L["mouth_thickness"] / 2
    return (-(L["mouth_half_width"] + half_t), L["mouth_half_width"] + half_t,
            L["mouth_y"] - L["mouth_bend"] - mouth_reach(version), L["mouth_y"] + L["mouth_bend"] + mouth_reach(version))


def mouth_reach(version: int = 1) -> float:
    """Vertical reach of the mouth stroke beyond its centre line, in face units.

    Version 1 paints the stroke where |y - curve| / sqrt(1 + slope^2) <= thickness / 2, so where the arc
    is steepest (its ends, slope 4 * bend / half_width) it reaches thickness / 2 * sqrt(1 + slope^2).
    Versions 2 and 3 paint it within thickness / 2 of the arc, so it reaches thickness / 2 beyond the arc's
    highest and lowest points.
    """
    L = LAYOUTS[version]
    if version != 1:
        return L["mouth_thickness"] / 2
    steepest = 4.0 * L["mouth_bend"] / L["mouth_half_width"]
    return L["mouth_thickness"] / 2 * float(np.sqrt(1.0 + steepest * steepest))


# Version 1's boxes (each Smileys holds its own version's).
FACE_BOX, EYE_BOX, MOUTH_BOX = region_box("face"), region_box("eyes"), region_box("mouth")


# ---- signed distances (px, negative inside) and painting ----------------------------------------------
def _coverage(distance: np.ndarray) -> np.ndarray:
    """Fraction of a pixel covered by a shape whose signed distance at the pixel centre is given."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def _paint(image: np.ndarray, coverage: np.ndarray, colour) -> None:
    """Composite a colour (3,) or per-image colours (B, 3) over a (B, 3, h, w) image with coverage (B, h, w)."""
    colour = np.asarray(colour, dtype=np.float32)
    colour = colour[None, :, None, None] if colour.ndim == 1 else colour[:, :, None, None]
    image += coverage[:, None] * (colour - image)


def _circle_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(x * x + y * y)


def _ellipse_distance(x, y, a, b) -> np.ndarray:
    """First-order signed distance to an axis-aligned ellipse: (r - 1) / |grad r|, r the scaled radius."""
    qx, qy = x / a, y / b
    r = np.sqrt(qx * qx + qy * qy)
    grad = np.sqrt((qx / a) ** 2 + (qy / b) ** 2) / np.maximum(r, 1e-6)
    return (r - 1.0) / np.maximum(grad, 1e-6)


def _segment_distance(x, y, half_length) -> np.ndarray:
    """Distance to the horizontal segment from (-half_length, 0) to (+half_length, 0)."""
    dx = np.maximum(np.abs(x) - half_length, 0.0)
    return np.sqrt(dx * dx + y * y)


def _arc_distance(x, y, half_width, bend) -> np.ndarray:
    """Distance to the parabola arc y = bend * (1 - 2 (x / w)^2), |x| <= w (middle at +bend, ends at -bend).

    Inside the span: vertical gap divided by sqrt(1 + slope^2) (first order); beyond it: distance to
    the nearer end point, which gives the mouth round corners.
    """
    t = x / half_width
    curve = bend * (1.0 - 2.0 * t * t)
    slope = -4.0 * bend * x / (half_width * half_width)
    inside = np.abs(y - curve) / np.sqrt(1.0 + slope * slope)
    end_dx = np.abs(x) - half_width
    end_dy = y + bend
    ends = np.sqrt(end_dx * end_dx + end_dy * end_dy)
    return np.where(np.abs(x) <= half_width, inside, ends)


def _arc_distance_exact(x, y, half_width, bend, iterations: int = 6) -> np.ndarray:
    """Euclidean distance to the same parabola arc, |x| <= w, with round ends.

    The nearest point (t, curve(t)) minimises (t - x)^2 + (curve(t) - y)^2 over t in [-w, w]. Newton's
    method, clamped to the span, runs from three starts (t = x and both ends: off the arc's convex side
    the squared distance has two minima) and the nearest result is kept. The first-order distance of
    version 1 overestimates the reach at the steep ends of a thick stroke, where it paints spurs; this
    one draws a stroke of even thickness.
    """
    a = -2.0 * bend / (half_width * half_width)          # curve(t) = bend + a t^2
    shape = np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(a))
    best = None
    for start in (np.clip(x, -half_width, half_width), -half_width, half_width):
        t = np.broadcast_to(np.asarray(start, dtype=np.float32), shape).copy()
        for _ in range(iterations):
            gap = bend + a * t * t - y
            slope = 2.0 * a * t
            gradient = (t - x) + gap * slope                  # half the derivative of the squared distance
            curvature = 1.0 + slope * slope + gap * 2.0 * a
            # Where the squared distance is not convex, a step down the gradient instead of Newton's.
            step = np.where(curvature > 0.1, gradient / np.maximum(curvature, 0.1), 0.5 * gradient)
            t = np.clip(t - step, -half_width, half_width)
        dx, dy = t - x, bend + a * t * t - y
        distance = np.sqrt(dx * dx + dy * dy)
        best = distance if best is None else np.minimum(best, distance)
    return best


# ---- the correlated index set ---------------------------------------------------------------------------
def correlated_index_set(ds: Smileys, first: str, second: str, correlation: float,
                         candidates: np.ndarray | None = None) -> np.ndarray:
    """Deterministic subsample of the grid (or of the grid indices `candidates`) in which two binarised factors
    have phi correlation `correlation`.

    Each factor is binarised at the midpoint of its value range (smile > 0, glasses = 1, ...). Within each
    group of the first factor (a = 0 / 1) the subsample keeps images so that
    P(second = 1 | a = 1) = (1 + correlation) / 2 and P(second = 1 | a = 0) = (1 - correlation) / 2, keeping
    as many images as possible and the same fraction of each a-group (so P(a) is unchanged). The images
    kept inside a cell are chosen by a fixed seed. Returns the sorted kept grid indices.
    """
    candidates = np.arange(len(ds), dtype=np.int64) if candidates is None else np.asarray(candidates, np.int64)
    all_classes = ds.factors_of(candidates)
    a = _binarised(ds, all_classes, first)
    b = _binarised(ds, all_classes, second)
    want = {1: (1.0 + correlation) / 2.0, 0: (1.0 - correlation) / 2.0}
    # For each a-group, the largest group size that the cells can supply at the wanted ratio.
    kept_fraction = 1.0
    for group in (0, 1):
        n_pos = np.count_nonzero((a == group) & b)
        n_neg = np.count_nonzero((a == group) & ~b)
        p = want[group]
        supply = min(n_pos / p if p > 0 else np.inf, n_neg / (1 - p) if p < 1 else np.inf)
        kept_fraction = min(kept_fraction, supply / np.count_nonzero(a == group))
    rng = np.random.default_rng(CORRELATION_SEED)
    kept = []
    for group in (0, 1):
        total = kept_fraction * np.count_nonzero(a == group)
        for value, share in ((True, want[group]), (False, 1.0 - want[group])):
            cell = np.nonzero((a == group) & (b == value))[0]
            count = min(len(cell), int(round(total * share)))
            kept.append(candidates[rng.choice(cell, size=count, replace=False)])
    return np.sort(np.concatenate(kept))


def _binarised(ds: Smileys, classes: np.ndarray, factor: str) -> np.ndarray:
    k = ds.factor_names.index(factor)
    values = ds.factor_values[k]
    midpoint = (values.min() + values.max()) / 2.0
    return values[classes[:, k]] > midpoint


def load_smileys(cfg: DataConfig) -> Smileys:
    """Smileys grid; options: version (1, 2 or 3, default 1), correlate (two factor names), correlation
    (in [-1, 1], default 0.8), correlate_split ("all" or "test", default "all")."""
    options = cfg.options
    check_options("smileys", options, ["version", "correlate", "correlation", "correlate_split"])
    version = options.get("version", 1)
    ds = Smileys(cfg.image_size, version)
    source = f"procedural smileys{VERSION_NOTES[version]}"
    if "correlate" not in options:
        for needs_pair in ("correlation", "correlate_split"):
            if needs_pair in options:
                raise UserError(f"smileys: option {needs_pair!r} needs 'correlate': [factor, factor]")
        ds.train_indices, ds.test_indices = fixed_split(len(ds), cfg.test_fraction, cfg.subset)
        ds.source_note = f"{source} (64,000-image factor grid)"
        return ds
    first, second, correlation = _correlate_options(options)
    split = options.get("correlate_split", "all")
    if split not in ("all", "test"):
        raise UserError(f"smileys: option 'correlate_split' must be 'all' or 'test', got {split!r}")
    if split == "test":
        ds.train_indices, test = fixed_split(len(ds), cfg.test_fraction, cfg.subset)
        ds.test_indices = correlated_index_set(ds, first, second, correlation, candidates=test)
        ds.index_set = np.union1d(ds.train_indices, ds.test_indices)
        ds.source_note = (f"{source} (64,000-image factor grid); training on the whole grid's training "
                          f"split, test faces resampled so that {first} and {second} (binarised) have correlation "
                          f"{correlation:g} ({len(ds.test_indices)} of {len(test)} test images)")
        return ds
    kept = correlated_index_set(ds, first, second, correlation)
    train_pos, test_pos = split_indices(len(kept), float(cfg.test_fraction))
    ds.train_indices = take_subset(kept[train_pos], cfg.subset)
    ds.test_indices = kept[test_pos]
    ds.index_set = kept
    ds.source_note = (f"{source}, index set resampled so that {first} and {second} (binarised) have "
                      f"correlation {correlation:g} ({len(kept)} of {len(ds)} grid images)")
    return ds


def _correlate_options(options: dict) -> tuple:
    pair = options["correlate"]
    if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
            and pair[0] != pair[1]):
        raise UserError(f"smileys: option 'correlate' must be two different factor names, got {pair!r}")
    for factor in pair:
        if factor not in FACTOR_NAMES:
            raise UserError(f"smileys: cannot correlate unknown factor {factor!r} (factors: {', '.join(FACTOR_NAMES)})")
    correlation = options.get("correlation", 0.8)
    if isinstance(correlation, bool) or not isinstance(correlation, (int, float)) or not -1.0 <= correlation <= 1.0:
        raise UserError(f"smileys: option 'correlation' must be a number in [-1, 1], got {correlation!r}")
    return pair[0], pair[1], float(correlation)
