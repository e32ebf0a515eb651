"""Pictures a class can read from the back of the room, and names instead of codes, on the bundled runs.

Each test guards one defect seen on a projector: tiles shrunk below 96 px or smoothed, traversal rows named
only in a paragraph (and not at all in the downloaded PNG), chart text of 8-10 px, a white chart in the dark
theme (see tests/test_browser.py for the page itself), raw label codes ("shape = 0, posX = 6"), means of
class labels, class-against-the-rest vectors and a bias correction that names nothing.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from explorer import charts, figures
from explorer import latent_ops as ops
from explorer.points import Points
from explorer.runs import RunRegistry
from explorer.tabs.attributes import attribute_markdown, correction_choice
from explorer.tabs.disentangle import DisentangleTab, row_label, traversal_grid
from explorer.tabs.events import Page
from explorer.tabs.point import describe_point, selection_markdown
from training.data import describe_labels

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


@pytest.fixture(scope="module")
def registry():
    return RunRegistry([ASSETS])


# ---- sizes and pixels ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", [28, 32, 64])
def test_single_images_reach_192_px_by_a_whole_nearest_neighbour_factor(side):
    image = np.random.default_rng(side).integers(0, 256, (side, side, 1), dtype=np.uint8)
    shown = np.asarray(figures.show(image))
    factor = shown.shape[0] // side
    assert shown.shape[0] >= figures.IMAGE_PX >= 192 and shown.shape[0] == factor * side
    # nearest neighbour: every factor x factor block is one source pixel, unchanged (no smoothing)
    np.testing.assert_array_equal(shown[::factor, ::factor], image[..., 0])
    np.testing.assert_array_equal(shown, image[..., 0].repeat(factor, 0).repeat(factor, 1))


@pytest.mark.parametrize("side", [28, 64])
def test_grid_strip_and_captioned_tiles_are_at_least_96_px(side):
    images = np.random.default_rng(1).integers(0, 256, (9, side, side, 3), dtype=np.uint8)
    factor = -(-96 // side)
    tile = side * factor
    grid = np.asarray(figures.grid(images, nrow=9))
    assert grid.shape[1] == 9 * tile + 10 * 3  # nine tiles of `tile` px and 3-px lines: not shrunk
    np.testing.assert_array_equal(grid[3:3 + tile, 3:3 + tile], images[0].repeat(factor, 0).repeat(factor, 1))
    strip = figures.strip(images)
    assert strip.size[0] <= figures.STRIP_MAX_PX and (strip.size[0] - 3) % (tile + 3) == 0
    sheet = figures.captioned_grid(images[:8], [f"#{i}" for i in range(8)], nrow=4)
    assert sheet.size == (4 * (tile + 4) + 4, 2 * (tile + figures.TEXT_PX + 6 + 4) + 4)  # two rows of four
    wide = figures.captioned_grid(images, [f"#{i}" for i in range(9)], nrow=9)
    assert wide.size[0] <= figures.STRIP_MAX_PX  # wraps instead of overflowing its column


def test_bundled_pictures_of_the_tabs_keep_their_sizes(registry):
    run = registry.get("dsprites-btcvae")
    grid, _ = traversal_grid(run, run.latents["mu"][0], 3.0)
    # 64-px images doubled: tiles of 128 px, five columns, narrow enough for the tab beside the map
    assert grid.size[0] == 5 * 128 + 6 * 3 <= figures.STRIP_MAX_PX


# ---- traversal labels -----------------------------------------------------------------------------------------
def test_traversal_rows_name_the_factor_they_move_from_mutual_information(registry):
    run = registry.get("dsprites-btcvae")
    labels = {int(d): row_label(run, int(d)) for d in ops.dims_by_kl(run)}
    # The bundled β-TCVAE puts x, y and scale each in one dimension (its MIG entry says so too).
    moved = " ".join(labels.values())
    for factor in ("moves x", "moves y", "moves scale"):
        assert factor in moved, labels
    kl = ops.kl_per_dim(run)
    top = int(np.argmax(kl))
    assert labels[top].startswith(f"z{top} · KL {kl[top]:.2f}")
    collapsed = int(np.argmin(kl))
    assert labels[collapsed].endswith("collapsed")
    assert run.label_information.shape == (run.latent_dim, len(run.label_names))
    assert run.label_information is run.label_information  # computed once per run


def _band_ink(picture: Image.Image, tile_top: int) -> int:
    """Dark pixels in the label band above the first row of tiles."""
    band = np.asarray(picture.convert("L"))[:tile_top - 3]
    return int((band < 100).sum())


def test_the_downloaded_traversal_png_carries_the_row_labels_and_column_values(registry):
    tab = DisentangleTab(Page(Points(registry), registry.names()))
    run, picture = tab.traversal_picture("dsprites-btcvae", 0, 3.0, None)
    png = Image.open(io.BytesIO(figures.to_png_bytes(picture))).convert("RGB")
    band = figures.TEXT_PX + 8
    assert _band_ink(png, band) > 50  # text in the band above the first row
    a = np.asarray(png.convert("L"))
    assert (a[-band:] < 100).sum() > 20  # the column values under the last row
    blank = figures.labelled_grid(np.zeros((5, 64, 64, 1), np.uint8), 5, [""], [""])
    assert _band_ink(blank, band) == 0  # what a band without a label looks like


# ---- charts ---------------------------------------------------------------------------------------------------
def _ink_height(picture: Image.Image, rows: slice) -> int:
    ink = np.asarray(picture.convert("L"))[rows] < 128
    r = np.where(ink.any(axis=1))[0]
    return int(r.max() - r.min() + 1)


def test_chart_text_is_at_least_14_px():
    kl = charts.kl_bar_figure([0.0, 2.5, 0.3, 1.0])
    # the title "KL per dimension (nats)": its brackets span the font's full height
    assert _ink_height(kl, slice(0, charts.TEXT_PX + 12)) >= 14
    assert charts.TEXT_PX >= 14


# ---- names, not codes -----------------------------------------------------------------------------------------
def test_label_descriptions_come_from_the_dataset():
    shape, scale, orientation, x, y = describe_labels("dsprites", ["shape", "scale", "orientation", "posX", "posY"])
    assert [shape.format(k) for k in range(3)] == ["square", "ellipse", "heart"]
    assert scale.describe_range() == "0.5 – 1" and orientation.format(39) == "360°"
    assert (x.title, x.format(6), y.format(31)) == ("x", "0.19", "1")
    smile, glasses = describe_labels("smileys", ["smile", "glasses"])
    assert smile.describe_range() == "-1 – 1" and glasses.format(1.0) == "glasses"
    assert describe_labels("mnist", ["digit"])[0].kind == "categorical"
    unknown = describe_labels("folder:x", ["age"], ["continuous"])[0]
    assert unknown.title == "age" and unknown.format(31.5) == "31.5"


def test_point_info_and_legend_use_names(registry):
    run = registry.get("dsprites-vae")
    info = describe_point(run, 0)
    labels = run.latents["labels"][0]
    assert f"shape = {['square', 'ellipse', 'heart'][int(labels[0])]}" in info
    assert f"x = {run.labels[3].format(labels[3])}" in info and "posX" not in info
    legend = figures.map_payload(run, "shape")["legend"]
    assert [e["label"] for e in legend] == ["square", "ellipse", "heart"]
    position = figures.map_payload(run, "posX")
    assert position["color_kind"] == "continuous" and position["color_range"] == [0.0, 1.0]
    glasses = figures.map_payload(registry.get("smileys-btcvae"), "glasses")["legend"]
    assert {e["label"] for e in glasses} == {"no glasses", "glasses"}


def test_a_selection_counts_classes_instead_of_averaging_them(registry):
    run = registry.get("mnist-vae")
    rows = list(range(40))
    text = selection_markdown(run, rows)
    digits = run.latents["labels"][rows, 0].astype(int)
    top = np.bincount(digits).argmax()
    assert f"digit: {top} ×{np.bincount(digits).max()}" in text and "digit: mean" not in text
    smileys = selection_markdown(registry.get("smileys-btcvae"), rows)
    assert "size: mean" in smileys and "glasses: no glasses ×" in smileys


# ---- attribute arithmetic -------------------------------------------------------------------------------------
def test_categorical_labels_give_class_to_class_vectors(registry):
    run = registry.get("mnist-vae")
    names = run.attribute_names
    assert "digit" not in names and "digit: 3 → 8" in names and len(names) == 90
    v, auc = ops.attribute_vector(run, "digit: 3 → 8")
    mu, digit = run.latents["mu"].astype(np.float64), run.latents["labels"][:, 0]
    np.testing.assert_allclose(v, mu[digit == 8].mean(0) - mu[digit == 3].mean(0), rtol=1e-5, atol=1e-6)
    assert auc > 0.9
    assert "mean(μ | 8) − mean(μ | 3)" in attribute_markdown(run, "digit: 3 → 8", False, auc)
    shapes = registry.get("dsprites-vae").attribute_names
    assert "shape" not in shapes and "shape: square → heart" in shapes and "scale" in shapes


def test_bias_correction_is_offered_only_against_a_correlated_label_and_names_it(registry):
    smileys = registry.get("smileys-btcvae")
    confounder, correlation = ops.confounder_of(smileys, "smile")
    assert confounder == "glasses" and correlation > 0.5
    box = correction_choice(smileys, "smile")
    assert box.interactive is not False and "glasses" in box.label
    v, auc = ops.attribute_vector(smileys, "smile", corrected=True)
    assert "balanced against *glasses*" in attribute_markdown(smileys, "smile", True, auc)
    mnist, dsprites = registry.get("mnist-vae"), registry.get("dsprites-vae")
    assert ops.confounder_of(mnist, "digit: 3 → 8") is None
    assert ops.confounder_of(dsprites, "scale") is None  # posX correlates by -0.02: nothing to balance
    assert correction_choice(mnist, "digit: 3 → 8").interactive is False


def test_every_described_column_is_a_column_of_its_dataset():
    from training.data import LABEL_DESCRIPTIONS, DSprites
    from training.data.smileys import FACTOR_NAMES, LABEL_KINDS

    assert [info.name for info in LABEL_DESCRIPTIONS["dsprites"]] == DSprites().label_names
    smileys = LABEL_DESCRIPTIONS["smileys"]
    assert [info.name for info in smileys] == FACTOR_NAMES and [info.kind for info in smileys] == LABEL_KINDS
    assert [info.value_names for info in LABEL_DESCRIPTIONS["mnist"]] == [tuple(str(d) for d in range(10))]
