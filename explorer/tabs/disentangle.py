"""Disentangle tab: traversal grids (dimensions ordered by KL) of this run and of a compared run, KL per
dimension, disentanglement scores, and live sliders for the point's most active dimensions."""
from __future__ import annotations

import html
from typing import Optional

import gradio as gr
import numpy as np
from PIL import Image

from training.errors import UserError

from .. import charts, figures, ui_decode
from .. import latent_ops as ops
from .. import pictures
from ..checks import number, user_errors
from ..points import Points
from ..run_scores import read_scores
from ..runs import LoadedRun
from .events import HEAVY, LIVE, Page, Step, cleared_on_failure, image_out, pixel_image, private, then

LIVE_DIMS = 6             # live sliders for the most active latent dimensions
TRAVERSAL_STEPS = 5       # five columns of tiles >= 96 px fit the tab column beside the map at 1440 px
MIN_SHARE = 0.1           # a row names a label only when it carries at least this share of its entropy
GRID_COLUMN_PX = 600      # narrowest column for a traversal grid (it scrolls sideways inside when wider)
ACTIVE_KL = 0.01          # nats: below this a dimension is collapsed (the KL chart's grey bars)
VQ_NO_TRAVERSAL = "A VQ-VAE's latent is a grid of discrete codes"


def checked_span(span) -> float:
    return number(span, "span", 0.5, 6.0)


def traversal_grid(run: LoadedRun, z: np.ndarray, span: float) -> tuple[Image.Image, str]:
    """The traversal grid from latent z over ±span and the note that says how to read it."""
    dims = traversal_dims(run)
    values = np.linspace(-span, span, TRAVERSAL_STEPS)
    images = ops.traversal(run, z=z, dims=dims, values=values)
    rows = [row_label(run, int(d)) for d in dims]
    picture = figures.labelled_grid(images, TRAVERSAL_STEPS, rows, [f"{v:.2g}" for v in values])
    note = ("Each row sets one dimension to the values under the columns; the other dimensions stay at the "
            "point's posterior mean. Above each row: its KL (nats; near 0 = collapsed, ignored by the decoder) "
            "and the label it moves most: the mutual information MIG uses, as a share of that label's entropy "
            "(1 = the dimension alone tells the label). Rows are ordered by KL.")
    return picture, note


def traversal_dims(run: LoadedRun, most: int = 10, collapsed: int = 2) -> np.ndarray:
    """The rows of a traversal: the dimensions that carry information (KL above ACTIVE_KL), most first,
    then `collapsed` ones to show what a collapsed dimension looks like; `most` rows at most."""
    order = ops.dims_by_kl(run)
    kl = ops.kl_per_dim(run)
    if kl is None:
        return order[:most]
    active = [int(d) for d in order if kl[d] > ACTIVE_KL]
    rest = [int(d) for d in order if kl[d] <= ACTIVE_KL]
    return np.asarray((active + rest[:collapsed])[:most], dtype=np.int64)


def row_label(run: LoadedRun, d: int) -> str:
    """The label band of traversal row z_d: 'z3 · KL 2.31 · moves x (0.67)', or '… · collapsed'."""
    kl = ops.kl_per_dim(run)
    parts = [f"z{d}"] + ([f"KL {kl[d]:.2f}"] if kl is not None else [])
    if kl is not None and kl[d] <= ACTIVE_KL:
        return " · ".join(parts + ["collapsed"])
    info = run.label_information
    if info is not None and info.shape[0] > d:
        k = int(np.argmax(info[d]))
        if info[d, k] >= MIN_SHARE:
            parts.append(f"moves {run.labels[k].title} ({info[d, k]:.2f})")
    return " · ".join(parts)


def scores_markdown(run: LoadedRun) -> str:
    scores = read_scores(run.metrics, run.latent_dim)
    rows = [f"| {label} | {value:.3f} |" for label, value in scores.disentanglement]
    if scores.active_units is not None:
        rows.append(f"| active units | {scores.active_units} of {run.latent_dim} |")
    if not rows:
        return (f"**{html.escape(run.name)}**: no disentanglement scores (they need a dataset with "
                "ground-truth factors and `python -m training evaluate`).")
    protocol = f" — {html.escape(scores.protocol)}" if scores.protocol else ""
    return f"**{html.escape(run.name)}**{protocol}\n\n| score | value |\n|---|---|\n" + "\n".join(rows)


def kl_chart(run: LoadedRun) -> Optional[Image.Image]:
    kl = ops.kl_per_dim(run)
    if kl is None or run.is_vq or not np.any(kl > 0):
        return None
    return charts.kl_bar_figure(kl)


def live_slider_updates(run: LoadedRun) -> list:
    """Labels and visibility of the live sliders for a run."""
    if run.is_vq:
        return [gr.Slider(visible=False) for _ in range(LIVE_DIMS)]
    dims = ops.dims_by_kl(run)[:LIVE_DIMS]
    kl = ops.kl_per_dim(run)
    updates = []
    for i in range(LIVE_DIMS):
        if i < len(dims):
            d = int(dims[i])
            label = f"z{d}" + (f"  (KL {kl[d]:.2f} nats)" if kl is not None else "")
            updates.append(gr.Slider(label=label, visible=True, value=0.0))
        else:
            updates.append(gr.Slider(visible=False, value=0.0))
    return updates


def image_kind(config) -> tuple:
    """What two runs must share to be compared on the same image: dataset, resolution and channels."""
    return config.data.name, config.model.image_size, config.model.channels


def check_comparable(run: LoadedRun, other: LoadedRun) -> None:
    """UserError when `other` cannot encode `run`'s images (another dataset, resolution or channels)."""
    if image_kind(other.config) != image_kind(run.config):
        def described(r):
            size, channels = r.config.model.image_size, r.config.model.channels
            return f"{r.name!r} ({r.config.data.name}, {size}×{size}×{channels})"
        raise UserError(f"cannot compare {described(run)} with {described(other)}: "
                        "choose a run of the same dataset and image size")


def cleared_comparison():
    """The comparison's outputs with nothing shown: no grid, note, KL chart or scores."""
    return _hidden_image(), "", _hidden_image(), ""


def _hidden_image() -> gr.Image:
    return gr.Image(value=None, visible=False)


class DisentangleTab:
    def __init__(self, page: Page):
        self.points: Points = page.points

    def layout(self, page: Page) -> None:
        with gr.Row(elem_id="dis-controls"):
            page.trav_point = gr.Number(0, precision=0, minimum=-1, label="Traverse from point",
                                        elem_id="trav-point", min_width=100)
            page.span = gr.Slider(1.0, 4.0, value=3.0, step=0.5, label="Range ±", elem_id="span")
            self.from_click = gr.Button("Use clicked point", elem_id="trav-from-click", size="sm")
            page.compare_dd = gr.Dropdown(["none"] + page.names, value="none", label="Compare with run",
                                          elem_id="compare", allow_custom_value=True)
        # Each column is as wide as a traversal grid of 96-px tiles wants: side by side on a wide screen,
        # one above the other where the tab is narrower than two.
        with gr.Row(equal_height=False):
            with gr.Column(min_width=GRID_COLUMN_PX):
                gr.Markdown("**This run**")
                self.grid = pixel_image(show_label=False, elem_id="trav-grid")
                self.note = gr.Markdown(elem_id="trav-note")
                self.kl = image_out(show_label=False, elem_id="kl-chart")
                self.scores = gr.Markdown(elem_id="scores")
            with gr.Column(min_width=GRID_COLUMN_PX):
                gr.Markdown("**Compared run** (same image, encoded by that run)")
                self.cmp_grid = pixel_image(show_label=False, elem_id="cmp-grid", visible=False)
                self.cmp_note = gr.Markdown(elem_id="cmp-note")
                self.cmp_kl = image_out(show_label=False, elem_id="cmp-kl", visible=False)
                self.cmp_scores = gr.Markdown(elem_id="cmp-scores")
        gr.Markdown("#### Live: the most active dimensions of the point")
        with gr.Row():
            with gr.Column(scale=2):
                page.live = [gr.Slider(-4.0, 4.0, value=0.0, step=0.05, label=f"dim {i}", elem_id=f"live-{i}")
                             for i in range(LIVE_DIMS)]
            with gr.Column(scale=1):
                self.live_image = pixel_image(label="Decoded", elem_id="live-image", height=256)
                self.view = ui_decode.live_view("Decoded (in your browser)", "live-image",
                                                [f"live-{i}" for i in range(LIVE_DIMS)], elem_id="live-view")

    def define_steps(self, page: Page) -> None:
        here = [page.run_dd, page.trav_point, page.span, page.session]
        page.io.disentangle = Step(self.disentanglement, here, [self.grid, self.note, self.kl, self.scores, *page.live])
        page.io.compare = Step(self.compare, [page.compare_dd, *here], [self.cmp_grid, self.cmp_note, self.cmp_kl,
                                                                        self.cmp_scores])
        page.io.live = Step(self.live_traversal, [page.run_dd, page.trav_point, *page.live, page.session],
                            [self.live_image], live=True)
        page.io.live_recipe = Step(self.live_recipe, [page.run_dd, page.trav_point, page.session], [self.view],
                                   live=True, hidden=True)
        page.io.recipes.append(page.io.live_recipe)

    def wire(self, page: Page) -> None:
        dis, cmp, live, recipe = page.io.disentangle, page.io.compare, page.io.live, page.io.live_recipe
        then(self.from_click.click(None, [page.point], [page.trav_point], js="(p) => p"), dis, recipe, live, cmp)
        then(page.trav_point.submit(**dis.io(), api_name="disentanglement", **HEAVY), recipe, live, cmp)
        then(page.span.release(**dis.io(), **HEAVY, **private()), cmp)
        compared = page.compare_dd.input(**cmp.io(), api_name="compare", **HEAVY)
        cleared_on_failure(compared, cmp.outputs, cleared_comparison)
        # The sliders decode in the browser; the view sends `server_frame` per move only where it cannot.
        self.view.server_frame(**live.io(), api_name="live_traversal", trigger_mode="always_last",
                               show_progress="hidden", **LIVE)

    # ---- handlers ---------------------------------------------------------------------------------------
    def _start(self, run: LoadedRun, base_run: LoadedRun, point, session) -> np.ndarray:
        """The latent to traverse from: the point itself, or (another run) its image encoded by that run."""
        if base_run is run:
            return self.points.latent_of(run, point, session, "traversal point")
        image = self.points.image_of(base_run, point, session)
        x = pictures.prepare_image(run, image[..., 0] if image.shape[2] == 1 else image)
        return ops.encode_images(run, x)[0][0]

    @user_errors
    def disentanglement(self, name: str, point, span, session):
        """Traversal grid (dims ordered by KL), KL per dimension, disentanglement scores, and the live
        sliders' starting values (the point's posterior mean on those dimensions)."""
        run = self.points.run(name)
        span = checked_span(span)
        if run.is_vq:
            note = f"{VQ_NO_TRAVERSAL}: single-dimension traversals do not apply. Compare a VAE-family run on the right."
            return (None, note, None, scores_markdown(run), *[gr.Slider() for _ in range(LIVE_DIMS)])
        z = self._start(run, run, point, session)
        grid, note = traversal_grid(run, z, span)
        dims = ops.dims_by_kl(run)[:LIVE_DIMS]
        sliders = [gr.Slider(value=round(float(np.clip(z[int(d)], -4, 4)), 2)) if i < len(dims) else gr.Slider()
                   for i, d in enumerate(list(dims) + [None] * (LIVE_DIMS - len(dims)))]
        return (grid, note, kl_chart(run), scores_markdown(run), *sliders)

    @user_errors
    def live_traversal(self, name: str, point, *values_and_session):
        """Decode the point with its most active dimensions set to the live sliders' values."""
        *values, session = values_and_session
        run = self.points.run(name)
        if run.is_vq:
            raise UserError("live dimension sliders do not apply to a VQ-VAE")
        z = self.points.latent_of(run, point, session, "traversal point").astype(np.float64).copy()
        for d, v in zip(ops.dims_by_kl(run)[:LIVE_DIMS], values):
            z[int(d)] = number(v, f"value of z{int(d)}", -10.0, 10.0)
        return figures.show(ops.decode(run, z)[0])

    def live_recipe(self, name: str, point, session) -> dict:
        """What the browser needs to decode any slider values: the point's latent and the dims the sliders set."""
        try:
            run = self.points.run(name)
            if run.is_vq:
                return ui_decode.no_recipe()   # no live sliders for a grid of discrete codes
            z = self.points.latent_of(run, point, session, "traversal point")
        except UserError:
            return ui_decode.no_recipe()   # the server path says what is wrong
        dims = [int(d) for d in ops.dims_by_kl(run)[:LIVE_DIMS]]
        return ui_decode.recipe(run, "dims", z=ui_decode.floats(z), dims=dims)

    @user_errors
    def compare(self, other: str, name: str, point, span, session):
        """A second run side by side: its traversal from the same image (encoded by that run), its KL
        per dimension and its scores."""
        if other in (None, "", "none"):
            return _hidden_image(), "Choose a second run to compare.", _hidden_image(), ""
        run_b = self.points.run(other)
        run_a = self.points.run(name)
        check_comparable(run_a, run_b)
        span = checked_span(span)
        if run_b.is_vq:
            return (_hidden_image(), f"{VQ_NO_TRAVERSAL}: no per-dimension traversal.", _hidden_image(),
                    scores_markdown(run_b))
        grid, note = traversal_grid(run_b, self._start(run_b, run_a, point, session), span)
        kl = kl_chart(run_b)
        return (gr.Image(value=grid, visible=True), note, gr.Image(value=kl, visible=kl is not None),
                scores_markdown(run_b))

    def traversal_picture(self, name: str, point, span, session) -> tuple[LoadedRun, Image.Image]:
        """The run and its traversal grid for endpoint values (the Downloads tab writes it as PNG)."""
        run = self.points.run(name)
        if run.is_vq:
            raise UserError("a VQ-VAE has no per-dimension traversal")
        span = checked_span(span)
        return run, traversal_grid(run, self._start(run, run, point, session), span)[0]
