"""Lesson tab, the first tab: a guided tour of the explorer for a class, one step at a time.

The steps come from a lesson file (`explorer/lesson_file.py`, the bundled `lessons/vae_lesson.md`). Each
step shows its caption and a question; "Reveal the answer" shows the answer, and "Set up this step" sets
the run, the comparison, the map colouring, the points A / B / ★, the sliders and the tab, then runs the
same steps a run switch runs, so every panel shows the new settings. A run the step names that is not
loaded is reported in a note; the rest of the step is still set. The presenter view (static/lesson.js)
goes full screen with larger type, and ← / → move between steps.
"""
from __future__ import annotations

import html
import os
from functools import lru_cache

import gradio as gr

from training.errors import UserError
from training.runfolder import has_timeline_file

from .. import figures, ui_map
from ..checks import user_errors
from ..lesson_file import TABS, LessonStep
from ..runs import LoadedRun
from .events import DECODE, LIVE, Page, private, then
from .map_panel import map_payload

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
PRESENTER = '<button class="lesson-present" type="button" title="Full screen, larger type, ← / → for steps">⛶ Present</button>'


@lru_cache(maxsize=None)
def _script() -> str:
    with open(os.path.join(ui_map.STATIC_DIR, "lesson.js"), encoding="utf-8") as f:
        return f.read()


class LessonTab:
    def __init__(self, page: Page, steps: list[LessonStep], map_panel, attributes):
        self.points = page.points
        self.steps = steps
        # Controls owned by other parts that a step sets and the page does not share otherwise.
        self.map_panel, self.attributes = map_panel, attributes

    def layout(self, page: Page) -> None:
        with gr.Column(elem_id="lesson"):
            with gr.Row(elem_id="lesson-nav"):
                self.prev = gr.Button("◀", elem_id="lesson-prev", scale=0, min_width=56)
                self.step = gr.Dropdown([(f"{i + 1}. {s.title}", i) for i, s in enumerate(self.steps)], value=0,
                                        label=f"Step (of {len(self.steps)})", elem_id="lesson-step", scale=4)
                self.next = gr.Button("▶", elem_id="lesson-next", scale=0, min_width=56)
                gr.HTML(PRESENTER, js_on_load=_script(), elem_id="lesson-presenter", scale=0, min_width=110)
            first = self.steps[0]
            self.caption = gr.Markdown(self._caption(0), latex_delimiters=LATEX, elem_id="lesson-caption")
            self.question = gr.Markdown(self._question(first), latex_delimiters=LATEX, elem_id="lesson-question")
            with gr.Row():
                self.reveal = gr.Button("Reveal the answer", elem_id="lesson-reveal", size="sm")
                self.setup = gr.Button("Set up this step", variant="primary", elem_id="lesson-setup")
            self.answer = gr.Markdown(self._answer(first), latex_delimiters=LATEX, visible=False,
                                      elem_id="lesson-answer")
            self.note = gr.Markdown(elem_id="lesson-note")

    def define_steps(self, page: Page) -> None:
        pass  # nothing chains after this tab's events

    def wire(self, page: Page) -> None:
        shown = [self.step, self.caption, self.question, self.answer, self.note, page.tabs]
        self.step.input(self.show, [self.step], shown, **LIVE, **private())
        self.prev.click(self.show_prev, [self.step], shown, **LIVE, **private())
        self.next.click(self.show_next, [self.step], shown, **LIVE, **private())
        self.reveal.click(lambda: gr.Markdown(visible=True), None, [self.answer], **LIVE, **private())
        # Set the controls, then what a run switch shows (with the step's colouring and attribute), then
        # every view from the new values: the same steps, in the same order, as a run switch.
        controls = [page.run_dd, page.compare_dd, page.point, page.a, page.b, page.attr_point, page.trav_point,
                    page.recon_point, page.selection, page.method, page.n_frames, page.t, self.attributes.strength,
                    self.attributes.corrected, page.span, page.temperature, page.seed, page.n_samples, page.tabs,
                    self.note]
        dep = self.setup.click(self.set_up, [self.step, page.run_dd], controls, api_name="lesson_setup", **DECODE)
        select = page.io.select_run
        dep = dep.success(self.run_view, [self.step, page.run_dd], select.outputs, **DECODE, **private())
        then(dep, *page.refresh, quiet=True)

    # ---- what a step shows ------------------------------------------------------------------------------
    def _index(self, value) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(self.steps):
            raise UserError(f"unknown lesson step {str(value)[:20]!r} (1 to {len(self.steps)})")
        return value

    def _caption(self, i: int) -> str:
        return f"## {i + 1}. {self.steps[i].title}\n\n{self.steps[i].caption}"

    @staticmethod
    def _question(step: LessonStep) -> str:
        return f"**Ask the class:** {step.question}"

    @staticmethod
    def _answer(step: LessonStep) -> str:
        return f"**Answer:** {step.answer}"

    def _shown(self, i: int):
        step = self.steps[i]
        return (i, self._caption(i), self._question(step), gr.Markdown(self._answer(step), visible=False), "",
                gr.Tabs(selected=TABS["Lesson"]))

    @user_errors
    def show(self, value):
        return self._shown(self._index(value))

    @user_errors
    def show_prev(self, value):
        return self._shown(max(self._index(value) - 1, 0))

    @user_errors
    def show_next(self, value):
        return self._shown(min(self._index(value) + 1, len(self.steps) - 1))

    # ---- set up ---------------------------------------------------------------------------------------
    def _loaded(self, name: str):
        """The run if it is loaded and usable, else None."""
        if name not in self.points.run_choices():
            return None
        try:
            return self.points.run(name)
        except UserError:
            return None

    @user_errors
    def set_up(self, value, current: str):
        """The controls a lesson step sets (gr.skip() where it sets nothing), the tab and a note."""
        step = self.steps[self._index(value)]
        get = step.get
        notes = []
        run = self._loaded(step.run)
        if run is None:
            notes.append(f"Run **{html.escape(step.run)}** is not loaded here; the step's points and colours are "
                         f"left out and the rest is set on **{html.escape(str(current))}**. "
                         "Train and export it (see assets/README.md), or edit the lesson file.")
        compare = gr.skip()
        if "compare" in step.settings:
            compare = get("compare")
            if compare != "none" and self._loaded(compare) is None:
                notes.append(f"Comparison run **{html.escape(compare)}** is not loaded here.")
                compare = "none"

        def point(name):
            p = get(name)
            if p is None or run is None:
                return gr.skip()
            if p >= run.n_points:
                notes.append(f"Point {name} = {p} is beyond this run's {run.n_points} points; left as it is.")
                return gr.skip()
            return p

        clicked = point("point")
        if run is not None:
            notes += self._run_notes(step, run)

        def given(name):
            return get(name) if name in step.settings else gr.skip()

        return (step.run if run is not None else gr.skip(), compare, clicked, point("a"), point("b"), point("star"),
                clicked, clicked, "" if run is not None else gr.skip(), given("method"), given("frames"), given("t"),
                given("strength"), given("corrected"), given("span"), given("temperature"), given("seed"),
                given("samples"), gr.Tabs(selected=TABS[step.tab]), "  \n".join(notes))

    @staticmethod
    def _run_notes(step: LessonStep, run: LoadedRun) -> list[str]:
        """What this loaded run lacks for the step."""
        notes = []
        colour = step.get("colour")
        if colour is not None and colour not in figures.color_options(run):
            notes.append(f"Run **{html.escape(run.name)}** has no map colouring {html.escape(colour)!r}.")
        attribute = step.get("attribute")
        if attribute is not None and attribute not in run.attribute_names:
            notes.append(f"Run **{html.escape(run.name)}** has no attribute vector {html.escape(attribute)!r}.")
        if step.tab == "Training" and not has_timeline_file(run.path):
            notes.append(f"Run **{html.escape(run.name)}** has no training timeline (timeline.npz).")
        if step.tab == "Samples" and not run.has_prior:
            notes.append(f"Run **{html.escape(run.name)}** has no prior to sample from.")
        return notes

    @user_errors
    def run_view(self, value, name: str):
        """What a run switch shows (card, map, colour and attribute menus, live sliders, sample note), with
        the step's map colouring and attribute where this run has them."""
        step = self.steps[self._index(value)]
        out = list(self.map_panel.select_run(name))
        run = self.points.run(name)
        colour, attribute = step.get("colour"), step.get("attribute")
        if name == step.run and run.latents is not None and colour in figures.color_options(run):
            out[1] = gr.HTML(value=map_payload(run, colour), overlay=ui_map.empty_overlay())
            out[2] = gr.Dropdown(choices=figures.color_choices(run), value=colour)
        if name == step.run and attribute in run.attribute_names:
            out[3] = gr.Dropdown(choices=run.attribute_names, value=attribute)
        return tuple(out)
