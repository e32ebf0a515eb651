"""The Gradio app: the page layout and the state its parts share. `build_app(roots)` returns the
gr.Blocks; `launch_options()` the arguments its launch() needs (theme, CSS, upload limit, the middleware that
sends the browser runtime's wasm brotli-compressed).

Layout: the run picker and the latent map stay on the left (`tabs.map_panel`); tabs on the right show a
lesson for a class (first), the clicked point, reconstruction, prior samples, interpolation, attribute
arithmetic, disentanglement, the training timeline and downloads, one module each under `explorer/tabs/`,
each with its components, handlers and events. Every operation is a named endpoint (`api_name`), so
everything the page does can be scripted with gradio_client; the concurrency groups are described in `tabs/events.py`.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import gradio as gr
from starlette.middleware import Middleware

from . import limits, ui_decode, ui_map
from .lesson_file import TABS, LessonStep, load_lesson
from .points import Points
from .runs import RunRegistry
from .tabs.attributes import AttributesTab
from .tabs.disentangle import DisentangleTab
from .tabs.downloads import DownloadsTab
from .tabs.events import DECODE, LIVE, Page, private, then
from .tabs.interpolate import InterpolateTab
from .tabs.lesson import LessonTab
from .tabs.map_panel import MapPanel
from .tabs.point import PointTab
from .tabs.reconstruct import ReconstructTab
from .tabs.samples import SamplesTab
from .tabs.timeline import TimelineTab
from .tempfiles import Downloads

MAX_UPLOAD = "10mb"

TITLE = "VAE Latent Explorer"
INTRO = ("Click a point on the map to see its image and reconstruction; use **→ A / → B** to interpolate "
         "between two points and **→ ★** to edit one with an attribute vector. Box or lasso (top right of "
         "the map) selects many points.")

NO_RUNS = """
## No runs found

The app looks for run folders in: {roots}.

Train and export a small one (a few minutes on a laptop CPU), then start the app again:

```bash
python -m training train --model beta-vae --dataset dsprites --out runs/dsprites-betavae
python -m training evaluate runs/dsprites-betavae
python -m training export runs/dsprites-betavae
python app.py
```

Or point the app at other folders: `python app.py --runs path/to/runs`.
"""


def launch_options(demo: Optional[gr.Blocks] = None) -> dict:
    """Arguments for demo.launch() (Gradio 6 takes theme/CSS/head there, not in gr.Blocks); with the app
    from build_app, its <head> also starts the browser decoder as the page opens."""
    with open(os.path.join(ui_map.STATIC_DIR, "app.css"), encoding="utf-8") as f:
        css = f.read()
    limit_options = limits.launch_options()   # sessions, request bodies and uploads a visitor may hold
    limit_options["app_kwargs"]["middleware"].append(Middleware(ui_decode.BrotliRuntime))
    if getattr(demo, "page_preloads", None):
        limit_options["app_kwargs"]["middleware"].append(Middleware(ui_decode.PreloadLinks, links=demo.page_preloads))
    return dict(
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="pink"),
        css=css,
        max_file_size=MAX_UPLOAD,
        show_error=True,          # API clients get the one-line reason of a refused request
        footer_links=["api", "gradio"],
        # No run history: it would store every slider frame, and any visitor's upload, in the browser of a
        # shared classroom computer, and it adds routes a public Space does not need.
        run_history=False,
        head=getattr(demo, "page_head", None),
        **limit_options,
    )


def default_roots() -> list[str]:
    """assets/ next to app.py (the shipped runs) and ./runs (what `python -m training train` writes)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots = [os.path.join(repo, "assets"), os.path.abspath("runs")]
    return list(dict.fromkeys(roots))


def build_app(roots: Optional[Sequence[str]] = None, registry: Optional[RunRegistry] = None,
              lesson: Optional[Sequence[LessonStep]] = None) -> gr.Blocks:
    """The explorer over the runs found under `roots` (default: assets/ and ./runs), with the steps of a
    lesson file in its Lesson tab (default: the bundled lesson)."""
    roots = list(roots) if roots else default_roots()
    steps = list(lesson) if lesson else load_lesson()
    points = Points(registry or RunRegistry(roots))
    # Serve exactly plotly.min.js, our static folder and each run's decoder.onnx (the live sliders decode
    # in the browser); the rest of a run folder is never served (images are sent as decoded pictures).
    gr.set_static_paths(ui_map.static_paths() + ui_decode.decoder_paths(points.registry))
    names = points.run_choices()

    with gr.Blocks(title=TITLE, delete_cache=limits.CACHE_PRUNE, fill_width=True) as demo:
        demo.page_head = demo.page_preloads = None
        if not names:
            _no_runs_page(roots, points)
        else:
            _explorer_page(demo, Page(points, names), steps)
    demo.queue(default_concurrency_limit=2, max_size=256)
    demo.points = points  # the registry behind the page, for tests and benchmarks
    return demo


def _no_runs_page(roots: Sequence[str], points: Points) -> None:
    gr.Markdown(f"# {TITLE}")
    shown = ", ".join(f"`{r}`" for r in roots)
    gr.Markdown(NO_RUNS.format(roots=shown), elem_id="no-runs")
    note = points.broken_runs_note()
    if note:
        gr.Markdown(note)


def _explorer_page(demo: gr.Blocks, page: Page, steps: list[LessonStep]) -> None:
    page.session = gr.State({})
    downloads = Downloads()
    map_panel = MapPanel(page)
    point, reconstruct, samples = PointTab(page), ReconstructTab(page), SamplesTab(page)
    interpolate, attributes, disentangle = InterpolateTab(page, downloads), AttributesTab(page), DisentangleTab(page)
    parts = {"Lesson": LessonTab(page, steps, map_panel, attributes), "Point": point, "Reconstruct": reconstruct,
             "Samples": samples, "Interpolate": interpolate, "Attributes": attributes, "Disentangle": disentangle,
             "Training": TimelineTab(page), "Downloads": DownloadsTab(page, downloads, disentangle, interpolate)}
    tabs = [(label, TABS[label], tab) for label, tab in parts.items()]

    with gr.Row(elem_id="header"):
        gr.Markdown(f"# {TITLE}\n{INTRO}", elem_id="title")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=420):
            map_panel.layout(page)
        with gr.Column(scale=6, min_width=460):
            # wrap: a tab bar too wide for the column wraps onto a second row instead of hiding tabs in a menu.
            with gr.Tabs(elem_id="tabs", overflow_behavior="wrap") as page.tabs:
                for label, tab_id, tab in tabs:
                    with gr.Tab(label, id=tab_id):
                        tab.layout(page)

    parts = [map_panel] + [tab for _, _, tab in tabs]
    for part in parts:
        part.define_steps(page)
    page.refresh = run_switch_views(page.io)
    for part in parts:
        part.wire(page)
    _wire_run_switch(demo, page)
    first_model = ui_decode.initial_recipes(page.io.recipes)
    demo.page_head = ui_decode.preload_head(first_model)
    demo.page_preloads = ui_decode.preload_links(first_model)


def run_switch_views(io) -> tuple:
    """The steps that refresh every tab after a run switch (and after a lesson step's set-up)."""
    # The live views' recipes come first: they are cheap and make the sliders live before the grids arrive.
    # Every panel that shows something of a run is in this list: what it leaves out keeps the previous run's
    # pictures (the analogy, a selection, a saved GIF, a downloaded file).
    return (*io.recipes, io.point, io.overlay, io.strip, io.frame, io.attribute, io.reconstruct, io.disentangle,
            io.live, io.sample, io.compare, io.analogy, io.selection, io.gif_reset,
            io.downloads_reset)


def _wire_run_switch(demo: gr.Blocks, page: Page) -> None:
    """A run switch shows the new run's card and map, resets the points, then refreshes every tab
    (quietly: the card says what is missing). The default run's first view is computed when a page
    opens."""
    io = page.io
    views = page.refresh
    # `.input`, not `.change`: a lesson step sets the run from code and chains these steps itself, with its
    # own points; a `.change` chain would run alongside and reset them.
    for listener, public in ((page.run_dd.input, True), (demo.load, False)):
        naming = dict(api_name="select_run") if public else private()
        dep = listener(**io.select_run.io(), **naming, **DECODE)
        dep = dep.success(**io.first_points.io(), **LIVE, **private())
        then(dep, *views, quiet=True)
    # A page's first values are the default run's first points: its live views can start decoding without
    # waiting for the map and the card.
    for step in io.recipes:
        demo.load(**step.io(), **LIVE, **private(), show_progress="hidden")
