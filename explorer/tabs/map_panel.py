"""The left column: run picker, the latent map with its colouring and marks, the clicked point, the
model card. Switching runs refreshes every tab (`explorer.ui` chains their steps after `select_run`)."""
from __future__ import annotations

import html
import threading
import time
from typing import Optional

import gradio as gr

from training.errors import UserError
from training.runfolder import load_config

from .. import figures
from .. import latent_ops as ops
from .. import ui_map
from ..checks import choice, number, user_errors, whole_number
from .disentangle import image_kind, live_slider_updates
from .events import DECODE, LIVE, Page, Step, private, then
from .interpolate import METHODS
from .samples import sample_note


RESCAN_EVERY_S = 5.0  # a visitor opening the run list looks for new runs at most this often


def map_payload(run, color_by: str) -> dict:
    """The map component's value: the points (figures.map_payload, packed) and the sprite sheet of their
    thumbnails for the hover preview."""
    return ui_map.packed({**figures.map_payload(run, color_by), "sprite": ui_map.sprite(run)})


class MapPanel:
    def __init__(self, page: Page):
        self.points = page.points
        self.page = page
        self._rescanned = 0.0
        self._rescan_lock = threading.Lock()

    def layout(self, page: Page) -> None:
        names = page.names
        with gr.Row():
            page.run_dd = gr.Dropdown(names, value=names[0], label="Run", scale=4, elem_id="run",
                                      allow_custom_value=False)
            self.color_dd = gr.Dropdown(["none"], value="none", label="Colour points by", scale=3,
                                        elem_id="color-by", allow_custom_value=True)
        page.map_html = ui_map.map_component(elem_id="latent-map")
        with gr.Row(elem_id="point-row"):
            page.point = gr.Number(0, precision=0, minimum=-1, label="Clicked point", elem_id="point",
                                   scale=2, min_width=110)
            page.set_a = gr.Button("→ A", elem_id="set-a", scale=1, min_width=60, size="sm")
            page.set_b = gr.Button("→ B", elem_id="set-b", scale=1, min_width=60, size="sm")
            page.set_input = gr.Button("→ ★", elem_id="set-input", scale=1, min_width=60, size="sm")
        with gr.Accordion("About this run", open=True, elem_id="card-box"):
            self.card = gr.Markdown(elem_id="card")
            self.rescan = gr.Button("↻ Look for new runs", size="sm", elem_id="rescan")
        note = self.points.broken_runs_note()
        if note:
            gr.Markdown(note)

    def define_steps(self, page: Page) -> None:
        page.io.overlay = Step(self.overlay, [page.run_dd, page.point, page.a, page.b, page.method, page.n_frames,
                                              page.t, page.attr_point, page.selection, page.session],
                               [page.map_html], live=True, hidden=True)
        page.io.select_run = Step(self.select_run, [page.run_dd],
                                  [self.card, page.map_html, self.color_dd, page.attr_dd, *page.live, page.sample_note,
                                   page.compare_dd])
        page.io.first_points = Step(self.first_points, [page.run_dd],
                                    [page.point, page.a, page.b, page.attr_point, page.trav_point, page.recon_point,
                                     page.selection], live=True)

    def wire(self, page: Page) -> None:
        self.rescan.click(self.look_for_new_runs, [page.run_dd, page.compare_dd], [page.run_dd, page.compare_dd],
                          api_name="rescan", **DECODE)
        # Runs found by anyone reach every visitor: on page load and whenever the run list is opened.
        for triggers in (None, [page.run_dd.focus]):
            gr.on(triggers, self.current_runs, [page.run_dd, page.compare_dd], [page.run_dd, page.compare_dd],
                  **LIVE, **private(), show_progress="hidden")
        self.color_dd.input(self.map_view, [page.run_dd, self.color_dd], [page.map_html], api_name="map", **DECODE)
        # Clicks and selections arrive as custom events from static/map.js. A click is one request that
        # returns the point and its pictures: chained requests would each add a round trip. Its mark is drawn
        # by map.js at once (a map update in the same answer delays the pictures by the map's redraw).
        point_step = page.io.point
        self._click_outputs = len(point_step.outputs)
        page.map_html.point_click(self.map_clicked, [page.run_dd, page.session],
                                  [page.point, *point_step.outputs], **LIVE, **private(),
                                  show_progress="hidden")
        selected = page.map_html.point_select(self.map_selected, None, [page.selection], **LIVE, **private())
        then(selected, page.io.selection, page.io.overlay, group=DECODE)

    # ---- handlers ---------------------------------------------------------------------------------------
    @user_errors
    def select_run(self, name: str):
        """Model card, map, colour and attribute choices, live-slider labels for a run."""
        run = self.points.run(name)
        card = run.card_markdown()
        if run.latents is None:
            card += ("\n**This run has no latent table yet**: run `python -m training export "
                     f"{html.escape(run.path)}` to get the map, interpolation and attribute tabs.\n")
        default_colour = run.label_names[0] if run.label_names else "none"
        map_value = (map_payload(run, default_colour) if run.latents is not None
                     else ui_map.message_value("No map: this run has no exported latents (latents.npz)."))
        attributes = run.attribute_names
        return (
            card,
            gr.HTML(value=map_value, overlay=ui_map.empty_overlay()),
            gr.Dropdown(choices=figures.color_choices(run), value=default_colour),
            gr.Dropdown(choices=attributes, value=attributes[0] if attributes else None),
            *live_slider_updates(run),
            sample_note(run),
            self.compare_update(run),
        )

    @user_errors
    def first_points(self, name: str):
        """After a run switch: clicked point, A, B, attribute input ★, traversal point, reconstruction point
        and no selection. A, B and ★ are three distinct points that make the interpolation and the analogy
        show something (`latent_ops.starting_points`, on the Attributes tab's default attribute)."""
        run = self.points.run(name)
        if run.latents is None:
            return 0, 0, min(1, max(run.n_points - 1, 0)), 0, 0, 0, ""
        attributes = run.attribute_names
        contrast = ops.attribute_contrast(run, attributes[0]) if attributes else None
        a, b, star = ops.starting_points(run.latents["xy"], run.latents["mu"], contrast)
        return 0, a, b, star, 0, 0, ""

    def look_for_new_runs(self, name, other):
        with self._rescan_lock:
            self.points.registry.rescan()
            self._rescanned = time.monotonic()
        return self._run_lists(self.points.run_choices(), name, other)

    def current_runs(self, name, other):
        """The run lists as they are now (a rescan at most every RESCAN_EVERY_S); gr.skip() while they are
        still the ones the page was built with."""
        with self._rescan_lock:
            if time.monotonic() - self._rescanned > RESCAN_EVERY_S:
                self.points.registry.rescan()
                self._rescanned = time.monotonic()
        choices = self.points.run_choices()
        if choices == self.page.names:
            return gr.skip(), gr.skip()
        return self._run_lists(choices, name, other)

    def _run_lists(self, choices: list[str], name, other):
        # The shared components learn the new list too: a session that never received an update checks
        # the run it sends against them.
        self.page.run_dd.choices = [(c, c) for c in choices]
        self.page.compare_dd.choices = [(c, c) for c in ["none"] + choices]
        try:
            comparable = ["none"] + self.comparable_runs(self.points.run(name))
        except (UserError, gr.Error):
            comparable = ["none"]
        return (gr.Dropdown(choices=choices),
                gr.Dropdown(choices=comparable, value=other if other in comparable else gr.skip()))

    def comparable_runs(self, run) -> list[str]:
        """Other runs of the same dataset at the same resolution and channels, the natural comparison first:
        a run whose latents are of the same kind (continuous or codes) but of another model, then the same
        model, then the rest. Only configs are read: no other run is loaded for this."""
        here = run.config
        ranked = []
        for order, entry in enumerate(self.points.registry.entries()):
            if entry.error or entry.name == run.name:
                continue
            try:
                other = load_config(entry.path)
            except (OSError, ValueError, UserError):
                continue
            if image_kind(other) != image_kind(here):
                continue
            other_vq, same_model = other.model.name == "vqvae", other.model.name == here.model.name
            ranked.append(((other_vq != run.is_vq, same_model, order), entry.name))
        return [name for _, name in sorted(ranked)]

    def compare_update(self, run) -> gr.Dropdown:
        """The comparison's choices for a newly shown run, set to its natural pair (or none when it has none)."""
        choices = self.comparable_runs(run)
        return gr.Dropdown(choices=["none"] + choices, value=choices[0] if choices else "none")

    @user_errors
    def map_view(self, name: str, color_by: str):
        """The map's points coloured by a label, the split or a latent dimension."""
        run = self.points.run(name)
        if run.latents is None:
            return gr.HTML(value=ui_map.message_value("No map: this run has no exported latents."))
        if not isinstance(color_by, str):
            raise UserError("colour must be a name")
        return gr.HTML(value=map_payload(run, color_by))

    def overlay(self, name, point, a, b, method, steps, t, attr_point, selection, session):
        """Marks on the map for the current point, A, B, the interpolation path, the attribute input,
        your image and a selection. Decoration only: a piece that is not valid right now is left out."""
        points = self.points
        try:
            run = points.run(name)
        except UserError:
            return ui_map.overlay_update(ui_map.empty_overlay())
        if run.latents is None:
            return ui_map.overlay_update(ui_map.empty_overlay())

        def where(p):
            try:
                return ops.place_on_map(run, points.latent_of(run, p, session))[0]
            except (UserError, gr.Error):
                return None

        marks = {"point": where(point), "input": where(attr_point), "A": where(a), "B": where(b)}
        try:
            marks["you"] = ops.place_on_map(run, points.yours(run, session)["mu"])[0]
        except UserError:
            pass
        path = None
        if marks["A"] is not None and marks["B"] is not None:
            try:
                za, zb = points.latent_of(run, a, session), points.latent_of(run, b, session)
                n = whole_number(steps, "steps", 2, 64)
                method = choice(method, "method", METHODS)
                path = ops.place_on_map(run, ops.interpolate(za, zb, max(n, 12), method))
                tt = number(t, "t", 0.0, 1.0)
                marks["t"] = ops.place_on_map(run, ops.interpolate_at(za, zb, tt, method))[0]
            except UserError:
                pass
        try:
            rows = points.selected_rows(run, selection, strict=False)
        except UserError:
            rows = []
        selected = run.latents["xy"][rows] if rows else None
        return ui_map.overlay_update(ui_map.overlay(marks, path, selected))

    def map_clicked(self, name, session, evt: gr.EventData):
        """Browser map click -> the point number and the Point tab's pictures in one answer (what the public
        endpoint `point` returns)."""
        row = self.clicked_row(evt)
        if row is None:
            return (gr.skip(),) * (self._click_outputs + 1)
        return (row, *self.page.io.point.fn(name, row, session))

    @staticmethod
    def clicked_row(evt) -> Optional[int]:
        """The point a browser map click names, or None when it names none (the browser is not trusted)."""
        data = getattr(evt, "_data", {}) or {}
        return ui_map.row_from_event(data.get("row") if isinstance(data, dict) else None)

    @staticmethod
    def map_selected(evt: gr.EventData):
        """Browser box/lasso selection -> the selection text box (the public endpoint is `selection`)."""
        data = getattr(evt, "_data", {}) or {}
        rows = ui_map.rows_from_event(data.get("rows") if isinstance(data, dict) else None)
        return ", ".join(str(r) for r in rows)
