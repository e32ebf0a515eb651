"""The Gradio app: layout and wiring. `build_app(roots)` returns the gr.Blocks; `launch_options()` the
arguments its launch() needs (theme, CSS, upload limit).

Layout: the run picker and the latent map stay on the left; tabs on the right show the model card, the
clicked point, reconstruction, prior samples, interpolation, attribute arithmetic, disentanglement and
downloads. Every operation is a named endpoint (`api_name`), so everything the page does can be
scripted with gradio_client; what the handlers do is in `ui_handlers.py`, the map in `ui_map.py`.

Concurrency (a classroom of ~30 on a 2-core Space): torch runs one thread per request (app.py), and each
kind of work gets its own limit, so that a slider drag is never stuck behind someone's sample grid:
  * LIVE, not queued (`queue=False`): one decoded image per event (interpolation slider, attribute
    strength, live dimension sliders, a map click) and the map marks. A decode costs ~5 ms of CPU, but a
    trip through Gradio's queue costs ~80 ms more (measured here: 104 ms vs 18 ms for a direct POST), so
    these skip it; a drag sends only its latest value (trigger_mode="always_last"). They run in the HTTP
    server's thread pool (40 threads), which bounds them.
  * DECODE group, queued, limit 8: run switch and map colouring (a 0.3 MB payload), selections: a few
    ms to a few tens of ms each; 8 in flight keep both cores busy.
  * HEAVY group, queued, limit 2 (one per core): grids, strips, traversals, reconstructions with their
    posterior chart, PixelCNN sampling, GIF/CSV downloads. More at once would only slow every one down.
"""
from __future__ import annotations

import functools
import itertools
import os
from typing import Optional, Sequence

import gradio as gr
import numpy as np

from .runs import RunRegistry
from .ui_handlers import LIVE_DIMS, MASKS, METHODS, SOURCES, Explorer
from . import ui_map

LIVE = dict(queue=False)
DECODE = dict(concurrency_id="decode", concurrency_limit=8)
HEAVY = dict(concurrency_id="heavy", concurrency_limit=2)

_private_names = itertools.count()


def private() -> dict:
    """Keyword arguments of an event that is not part of the API. Each gets a throwaway api_name: without
    one, Gradio names it after its function and the public endpoint of that function becomes `name_2`."""
    return dict(api_visibility="private", api_name=f"private_{next(_private_names)}")

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


def launch_options() -> dict:
    """Arguments for demo.launch() (Gradio 6 takes theme/CSS there, not in gr.Blocks)."""
    with open(os.path.join(ui_map.STATIC_DIR, "app.css"), encoding="utf-8") as f:
        css = f.read()
    return dict(
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="pink"),
        css=css,
        max_file_size=MAX_UPLOAD,
        show_error=True,          # API clients get the one-line reason of a refused request
        footer_links=["api", "gradio"],
    )


def default_roots() -> list[str]:
    """assets/ next to app.py (the shipped runs) and ./runs (what `python -m training train` writes)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots = [os.path.join(repo, "assets"), os.path.abspath("runs")]
    return list(dict.fromkeys(roots))


def build_app(roots: Optional[Sequence[str]] = None, registry: Optional[RunRegistry] = None) -> gr.Blocks:
    """The explorer over the runs found under `roots` (default: assets/ and ./runs)."""
    roots = list(roots) if roots else default_roots()
    registry = registry or RunRegistry(roots)
    explorer = Explorer(registry)
    # Serve exactly plotly.min.js and our static folder; run folders are never served (images are
    # sent as decoded pictures).
    gr.set_static_paths(ui_map.static_paths())
    names = explorer.run_choices()

    with gr.Blocks(title=TITLE, delete_cache=(1800, 3600), fill_width=True) as demo:
        if not names:
            _no_runs_page(roots, explorer)
        else:
            _explorer_page(demo, explorer, names)
    demo.queue(default_concurrency_limit=2, max_size=256)
    demo.explorer = explorer  # for tests and benchmarks
    return demo


def _no_runs_page(roots: Sequence[str], explorer: Explorer) -> None:
    gr.Markdown(f"# {TITLE}")
    shown = ", ".join(f"`{r}`" for r in roots)
    gr.Markdown(NO_RUNS.format(roots=shown), elem_id="no-runs")
    note = explorer.broken_runs_note()
    if note:
        gr.Markdown(note)


def _explorer_page(demo: gr.Blocks, ex: Explorer, names: list[str]) -> None:
    session = gr.State({})

    with gr.Row(elem_id="header"):
        gr.Markdown(f"# {TITLE}\n{INTRO}", elem_id="title")

    with gr.Row(equal_height=False):
        # ---------------- left: run picker, map, point controls ----------------
        with gr.Column(scale=5, min_width=420):
            with gr.Row():
                run_dd = gr.Dropdown(names, value=names[0], label="Run", scale=4, elem_id="run",
                                     allow_custom_value=False)
                color_dd = gr.Dropdown(["none"], value="none", label="Colour points by", scale=3,
                                       elem_id="color-by", allow_custom_value=True)
            map_html = ui_map.map_component(elem_id="latent-map")
            with gr.Row(elem_id="point-row"):
                point = gr.Number(0, precision=0, minimum=-1, label="Clicked point", elem_id="point",
                                  scale=2, min_width=110)
                set_a = gr.Button("→ A", elem_id="set-a", scale=1, min_width=60, size="sm")
                set_b = gr.Button("→ B", elem_id="set-b", scale=1, min_width=60, size="sm")
                set_input = gr.Button("→ ★", elem_id="set-input", scale=1, min_width=60, size="sm")
            with gr.Accordion("About this run", open=True, elem_id="card-box"):
                card = gr.Markdown(elem_id="card")
                rescan = gr.Button("↻ Look for new runs", size="sm", elem_id="rescan")
            note = ex.broken_runs_note()
            if note:
                gr.Markdown(note)

        # ---------------- right: tabs ----------------
        with gr.Column(scale=6, min_width=460):
            with gr.Tabs(elem_id="tabs"):
                with gr.Tab("Point", id="tab-point"):
                    with gr.Row():
                        pt_image = gr.Image(label="Image", type="pil", format="png", interactive=False, elem_id="pt-image",
                                            elem_classes=["pixelated"], height=240)
                        pt_recon = gr.Image(label="Reconstruction (decoded posterior mean)", type="pil", format="png",
                                            interactive=False, elem_id="pt-recon", elem_classes=["pixelated"],
                                            height=240)
                    pt_info = gr.Markdown(elem_id="pt-info")
                    gr.Markdown("Nearest neighbours in latent space (Euclidean distance between posterior means):")
                    neighbours = gr.Image(show_label=False, type="pil", format="png", interactive=False,
                                          elem_id="neighbours", elem_classes=["pixelated"])
                    gr.Markdown("#### Selection (box / lasso on the map)")
                    selection = gr.Textbox(label="Selected points (numbers, comma separated; Enter to show)",
                                           elem_id="selection", max_lines=2)
                    with gr.Row():
                        sel_gallery = gr.Image(label="Selected images", type="pil", format="png",
                                               interactive=False, scale=3, elem_id="sel-gallery",
                                               elem_classes=["pixelated"])
                        sel_mean = gr.Image(label="Decoded mean of the selection", type="pil", format="png", interactive=False,
                                            scale=1, elem_id="sel-mean", elem_classes=["pixelated"], height=220)
                    sel_info = gr.Markdown(elem_id="sel-info")

                with gr.Tab("Reconstruct", id="tab-recon"):
                    with gr.Row():
                        source = gr.Radio(list(SOURCES), value="dataset point", label="Input", scale=3,
                                          elem_id="recon-source")
                        recon_point = gr.Number(0, precision=0, minimum=0, label="Point", scale=1,
                                                min_width=100, elem_id="recon-point")
                    with gr.Row():
                        # image_mode=None: the file reaches latent_ops.prepare_image untouched (it checks the size
                        # from the header before decoding, and handles alpha, 16-bit and animations itself).
                        upload = gr.Image(label="Upload an image", type="filepath", image_mode=None,
                                          sources=["upload", "clipboard"], height=220, elem_id="upload")
                        sketch = gr.Sketchpad(
                            value={"background": np.zeros((256, 256, 3), dtype=np.uint8), "layers": [],
                                   "composite": None},
                            label="…or draw", type="numpy", image_mode="RGB",
                            canvas_size=(256, 256), fixed_canvas=True, layers=False, transforms=(),
                            brush=gr.Brush(colors=["#ffffff", "#9a9a9a"], default_size=14, color_mode="fixed"),
                            height=300, elem_id="sketch")
                    with gr.Row():
                        noise = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Add noise (std)", elem_id="noise")
                        mask = gr.Dropdown(list(MASKS), value="none", label="Hide part of the image",
                                           elem_id="mask")
                    recon_btn = gr.Button("Reconstruct", variant="primary", elem_id="recon-btn")
                    with gr.Row():
                        rc_input = gr.Image(label="Input", type="pil", format="png", interactive=False, elem_id="rc-input",
                                            elem_classes=["pixelated"], height=220)
                        rc_output = gr.Image(label="Reconstruction", type="pil", format="png", interactive=False,
                                             elem_id="rc-output", elem_classes=["pixelated"], height=220)
                    rc_info = gr.Markdown(elem_id="rc-info")
                    rc_posterior = gr.Image(show_label=False, type="pil", format="png", interactive=False,
                                            elem_id="rc-posterior")

                with gr.Tab("Samples", id="tab-samples"):
                    sample_note = gr.Markdown(elem_id="sample-note")
                    with gr.Row():
                        n_samples = gr.Dropdown([4, 9, 16, 25, 36, 49, 64], value=36, label="Images",
                                                elem_id="n-samples", scale=1, min_width=90)
                        seed = gr.Number(0, precision=0, minimum=0, maximum=2**31 - 1, label="Seed",
                                         elem_id="seed", scale=1, min_width=90)
                        temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature",
                                                elem_id="temperature", scale=3)
                    with gr.Row():
                        sample_btn = gr.Button("Sample", variant="primary", elem_id="sample-btn")
                        new_seed = gr.Button("New seed", elem_id="new-seed")
                    samples = gr.Image(show_label=False, type="pil", format="png", interactive=False, elem_id="samples",
                                       elem_classes=["pixelated"])

                with gr.Tab("Interpolate", id="tab-interp"):
                    with gr.Row():
                        a = gr.Number(0, precision=0, minimum=-1, label="A (point)", elem_id="point-a",
                                      min_width=90)
                        b = gr.Number(1, precision=0, minimum=-1, label="B (point)", elem_id="point-b",
                                      min_width=90)
                        method = gr.Radio(list(METHODS), value="slerp", label="Path", elem_id="method")
                        steps = gr.Slider(3, 16, value=9, step=1, label="Frames", elem_id="steps")
                    interp_btn = gr.Button("Decode path A → B", elem_id="interp-btn")
                    strip = gr.Image(show_label=False, type="pil", format="png", interactive=False, elem_id="strip",
                                     elem_classes=["pixelated"])
                    with gr.Row(equal_height=False):
                        with gr.Column(scale=3, min_width=200):
                            t = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Position t between A and B",
                                          info="Drag: the frame decodes live and moves on the map.", elem_id="t")
                            gr.Markdown("The path is drawn on the map. *slerp* follows the sphere where prior "
                                        "samples live; *linear* cuts through the middle, where the norm is "
                                        "lower. Point -1 is your image from the Reconstruct tab.")
                            gif_btn = gr.Button("Save as GIF", size="sm", elem_id="gif-btn")
                            gif_file = gr.File(label="Interpolation GIF", interactive=False, elem_id="gif-file",
                                               visible=False)
                        frame = gr.Image(label="Decoded at t", type="pil", format="png", interactive=False, elem_id="frame",
                                         elem_classes=["pixelated"], height=240, scale=2, min_width=200)

                with gr.Tab("Attributes", id="tab-attr"):
                    with gr.Row():
                        attr_dd = gr.Dropdown([], label="Attribute", elem_id="attribute", allow_custom_value=True,
                                              scale=2)
                        corrected = gr.Checkbox(False, label="Bias-corrected vector", elem_id="corrected", scale=1)
                        attr_point = gr.Number(0, precision=0, minimum=-1, label="Input point ★",
                                               elem_id="attr-point", scale=1, min_width=100)
                    strength = gr.Slider(-4.0, 4.0, value=1.5, step=0.05, label="Strength (drag: decodes live)",
                                         elem_id="strength")
                    with gr.Row():
                        attr_in = gr.Image(label="Input", type="pil", format="png", interactive=False, elem_id="attr-in",
                                           elem_classes=["pixelated"], height=220)
                        attr_out = gr.Image(label="Input + strength · vector", type="pil", format="png", interactive=False,
                                            elem_id="attr-out", elem_classes=["pixelated"], height=220)
                    attr_info = gr.Markdown(elem_id="attr-info")
                    attr_btn = gr.Button("Apply", elem_id="attr-btn")
                    gr.Markdown("Strength −3 … +3:")
                    attr_strip = gr.Image(show_label=False, type="pil", format="png", interactive=False,
                                          elem_id="attr-strip", elem_classes=["pixelated"])
                    gr.Markdown("#### Analogy: A − B + ★\n*“A is to B as ? is to ★”* — A and B from the "
                                "Interpolate tab, ★ the input point above.")
                    analogy_btn = gr.Button("Compute A − B + ★", elem_id="analogy-btn")
                    gr.Markdown("Left to right: A, B, ★, A − B + ★")
                    analogy_out = gr.Image(show_label=False, type="pil", format="png", interactive=False,
                                           elem_id="analogy", elem_classes=["pixelated"])

                with gr.Tab("Disentangle", id="tab-dis"):
                    with gr.Row(elem_id="dis-controls"):
                        trav_point = gr.Number(0, precision=0, minimum=-1, label="Traverse from point",
                                               elem_id="trav-point", min_width=100)
                        span = gr.Slider(1.0, 4.0, value=3.0, step=0.5, label="Range ±", elem_id="span")
                        trav_from_click = gr.Button("Use clicked point", elem_id="trav-from-click", size="sm")
                        compare_dd = gr.Dropdown(["none"] + names, value="none", label="Compare with run",
                                                 elem_id="compare", allow_custom_value=True)
                    with gr.Row(equal_height=False):
                        with gr.Column(min_width=220):
                            gr.Markdown("**This run**")
                            trav_grid = gr.Image(show_label=False, type="pil", format="png", interactive=False,
                                                 elem_id="trav-grid", elem_classes=["pixelated"])
                            trav_note = gr.Markdown(elem_id="trav-note")
                            kl_chart = gr.Image(show_label=False, type="pil", format="png", interactive=False,
                                                elem_id="kl-chart")
                            scores = gr.Markdown(elem_id="scores")
                        with gr.Column(min_width=220):
                            gr.Markdown("**Compared run** (same image, encoded by that run)")
                            cmp_grid = gr.Image(show_label=False, type="pil", format="png", interactive=False,
                                                elem_id="cmp-grid", elem_classes=["pixelated"], visible=False)
                            cmp_note = gr.Markdown(elem_id="cmp-note")
                            cmp_kl = gr.Image(show_label=False, type="pil", format="png", interactive=False,
                                              elem_id="cmp-kl", visible=False)
                            cmp_scores = gr.Markdown(elem_id="cmp-scores")
                    gr.Markdown("#### Live: the most active dimensions of the point")
                    with gr.Row():
                        with gr.Column(scale=2):
                            live = [gr.Slider(-4.0, 4.0, value=0.0, step=0.05, label=f"dim {i}",
                                              elem_id=f"live-{i}") for i in range(LIVE_DIMS)]
                        live_image = gr.Image(label="Decoded", type="pil", format="png", interactive=False, elem_id="live-image",
                                              elem_classes=["pixelated"], scale=1, height=256)

                with gr.Tab("Downloads", id="tab-dl"):
                    gr.Markdown("Files for slides and notebooks. The grids use the settings of the Samples, "
                                "Disentangle and Interpolate tabs.")
                    with gr.Row():
                        dl_samples = gr.Button("Sample grid (PNG)", elem_id="dl-samples")
                        dl_traversal = gr.Button("Traversal grid (PNG)", elem_id="dl-traversal")
                        dl_gif = gr.Button("Interpolation (GIF)", elem_id="dl-gif")
                    with gr.Row():
                        dl_latents = gr.Button("Latents + map coordinates (CSV)", elem_id="dl-latents")
                        dl_attrs = gr.Button("Attribute vectors (JSON)", elem_id="dl-attrs")
                    dl_file = gr.File(label="Download", interactive=False, elem_id="dl-file", height=120)

    # ---------------- wiring ----------------
    run_outputs = [card, map_html, color_dd, attr_dd, *live, sample_note]
    resets = [point, a, b, attr_point, trav_point, recon_point, selection]
    overlay_inputs = [run_dd, point, a, b, method, steps, t, attr_point, selection, session]

    point_io = dict(fn=ex.show_point, inputs=[run_dd, point, session],
                    outputs=[pt_image, pt_recon, pt_info, neighbours])
    selection_io = dict(fn=ex.show_selection, inputs=[run_dd, selection],
                        outputs=[sel_gallery, sel_mean, sel_info])
    recon_io = dict(fn=ex.reconstruct,
                    inputs=[run_dd, source, recon_point, upload, sketch, noise, mask, session],
                    outputs=[rc_input, rc_output, rc_posterior, rc_info, session])
    sample_io = dict(fn=ex.sample, inputs=[run_dd, n_samples, seed, temperature], outputs=[samples])
    strip_io = dict(fn=ex.interpolate, inputs=[run_dd, a, b, method, steps, session], outputs=[strip])
    frame_io = dict(fn=ex.interpolate_frame, inputs=[run_dd, a, b, method, t, session], outputs=[frame])
    attr_io = dict(fn=ex.attribute, inputs=[run_dd, attr_dd, corrected, attr_point, strength, session],
                   outputs=[attr_in, attr_out, attr_strip, attr_info])
    attr_edit_io = dict(fn=ex.attribute_edit, inputs=[run_dd, attr_dd, corrected, attr_point, strength, session],
                        outputs=[attr_out])
    dis_io = dict(fn=ex.disentanglement, inputs=[run_dd, trav_point, span, session],
                  outputs=[trav_grid, trav_note, kl_chart, scores, *live])
    cmp_io = dict(fn=ex.compare, inputs=[compare_dd, run_dd, trav_point, span, session],
                  outputs=[cmp_grid, cmp_note, cmp_kl, cmp_scores])
    live_io = dict(fn=ex.live_traversal, inputs=[run_dd, trav_point, *live, session], outputs=[live_image])
    overlay_io = dict(fn=ex.overlay, inputs=overlay_inputs, outputs=[map_html])

    def then(dep, *ios, group=HEAVY, quiet=False):
        """Chain private follow-up steps after an event (each waits for the one before). quiet: a step that
        cannot run for this run (no samples, no attributes...) clears its pictures instead of raising."""
        for io in ios:
            cheap = any(io is x for x in (point_io, frame_io, attr_edit_io, live_io, overlay_io))
            kind = LIVE if cheap else group
            step = dict(io, fn=_quietly(io["fn"], io["outputs"])) if quiet else io
            dep = dep.then(**step, **kind, **private(), show_progress="hidden" if io is overlay_io else "minimal")
        return dep

    # Run: card, map, choices; then every view for the new run (quietly: the card says what is missing).
    def load_run(listener, public: bool):
        dep = listener(ex.select_run, [run_dd], run_outputs,
                       **(dict(api_name="select_run") if public else private()), **DECODE)
        dep = dep.success(ex.first_points, [run_dd], resets, **LIVE, **private())
        then(dep, point_io, overlay_io, strip_io, frame_io, attr_io, recon_io, dis_io, live_io, sample_io, cmp_io,
             quiet=True)

    # The first view of the default run is computed when a page opens; later on each run change.
    load_run(run_dd.change, public=True)
    load_run(demo.load, public=False)

    def look_for_new_runs():
        ex.registry.rescan()
        choices = ex.run_choices()
        return gr.Dropdown(choices=choices), gr.Dropdown(choices=["none"] + choices)

    rescan.click(look_for_new_runs, None, [run_dd, compare_dd], api_name="rescan", **DECODE)

    color_dd.input(ex.map_view, [run_dd, color_dd], [map_html], api_name="map", **DECODE)

    # The map: clicks and selections arrive as custom events from static/map.js.
    clicked = map_html.point_click(ex.map_clicked, None, [point], **LIVE, **private())
    then(clicked, point_io, overlay_io)
    selected = map_html.point_select(ex.map_selected, None, [selection], **LIVE, **private())
    then(selected, selection_io, overlay_io, group=DECODE)

    then(point.input(**point_io, api_name="point", trigger_mode="always_last", **LIVE), overlay_io)
    then(selection.submit(**selection_io, api_name="selection", **DECODE), overlay_io)

    # Copy the clicked point into A / B / the attribute input without a server round trip.
    then(set_a.click(None, [point], [a], js="(p) => p"), strip_io, frame_io, overlay_io)
    then(set_b.click(None, [point], [b], js="(p) => p"), strip_io, frame_io, overlay_io)
    then(set_input.click(None, [point], [attr_point], js="(p) => p"), attr_io, overlay_io)
    then(trav_from_click.click(None, [point], [trav_point], js="(p) => p"), dis_io, live_io, cmp_io)

    # Reconstruction.
    then(recon_btn.click(**recon_io, api_name="reconstruct", **HEAVY), overlay_io)
    for dep in (noise.release, mask.input, source.input, recon_point.submit):
        then(dep(**recon_io, **HEAVY, **private()), overlay_io)

    # Samples.
    sample_btn.click(**sample_io, api_name="sample", **HEAVY)
    then(new_seed.click(None, None, [seed], js="() => Math.floor(Math.random() * 1000000)"), sample_io)
    for dep in (temperature.release, n_samples.input, seed.submit):
        dep(**sample_io, **HEAVY, **private())

    # Interpolation: the strip and the map path on release / change; the t slider decodes live.
    then(interp_btn.click(**strip_io, api_name="interpolate", **HEAVY), frame_io, overlay_io)
    for dep in (a.submit, b.submit, method.input, steps.release):
        then(dep(**strip_io, **HEAVY, **private()), frame_io, overlay_io)
    t.input(**frame_io, api_name="interpolate_frame", trigger_mode="always_last", show_progress="hidden", **LIVE)
    t.release(**overlay_io, **LIVE, **private(), show_progress="hidden")

    # Attribute arithmetic: the strength slider decodes live.
    then(attr_btn.click(**attr_io, api_name="attribute", **HEAVY), overlay_io)
    for dep in (attr_dd.input, corrected.input, attr_point.submit):
        then(dep(**attr_io, **HEAVY, **private()), overlay_io)
    strength.input(**attr_edit_io, api_name="attribute_edit", trigger_mode="always_last", show_progress="hidden",
                   **LIVE)
    analogy_btn.click(ex.analogy, [run_dd, a, b, attr_point, session], [analogy_out], api_name="analogy", **HEAVY)

    # Disentanglement: traversal grids (this run and a compared run), KL chart, scores, live sliders.
    then(trav_point.submit(**dis_io, api_name="disentanglement", **HEAVY), live_io, cmp_io)
    then(span.release(**dis_io, **HEAVY, **private()), cmp_io)
    compare_dd.input(**cmp_io, api_name="compare", **HEAVY)
    for i, slider in enumerate(live):
        slider.input(**live_io, trigger_mode="always_last", show_progress="hidden", **LIVE,
                     **(dict(api_name="live_traversal") if i == 0 else private()))

    # Downloads.
    dl_samples.click(ex.download_samples, [run_dd, n_samples, seed, temperature], [dl_file],
                     api_name="download_samples", **HEAVY)
    dl_traversal.click(ex.download_traversal, [run_dd, trav_point, span, session], [dl_file],
                       api_name="download_traversal", **HEAVY)
    dl_gif.click(ex.download_gif, [run_dd, a, b, method, steps, session], [dl_file],
                 api_name="download_gif", **HEAVY)
    gif_btn.click(lambda *args: gr.File(value=ex.download_gif(*args), visible=True),
                  [run_dd, a, b, method, steps, session], [gif_file], **HEAVY, **private())
    dl_latents.click(ex.download_latents, [run_dd], [dl_file], api_name="download_latents", **HEAVY)
    dl_attrs.click(ex.download_attributes, [run_dd], [dl_file], api_name="download_attributes", **HEAVY)


def _quietly(fn, outputs):
    """fn, but a gr.Error clears the pictures among `outputs` and leaves the rest alone."""
    @functools.wraps(fn)
    def quiet(*args):
        try:
            return fn(*args)
        except gr.Error:
            cleared = [None if isinstance(o, gr.Image) else gr.skip() for o in outputs]
            return cleared[0] if len(cleared) == 1 else tuple(cleared)
    return quiet
