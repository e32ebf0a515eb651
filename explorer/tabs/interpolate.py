"""Interpolate tab: the path between points A and B decoded as a strip, a live frame at position t, the
path drawn on the map, and the path as a GIF."""
from __future__ import annotations

import gradio as gr
import numpy as np

from training.errors import UserError

from .. import figures, ui_decode
from .. import latent_ops as ops
from ..checks import choice, number, user_errors, whole_number
from ..points import Points
from ..runs import LoadedRun
from ..tempfiles import Downloads
from .events import HEAVY, LIVE, Page, Step, cleared_on_failure, pixel_image, private, then

METHODS = tuple(ops.INTERPOLATORS)


def path_frames(points: Points, run: LoadedRun, a, b, method, steps, session) -> tuple[np.ndarray, str, int]:
    """The decoded frames from A to B for endpoint values (checked here), the method and the frame count."""
    method = choice(method, "method", METHODS)
    steps = whole_number(steps, "steps", 2, 64)
    za, zb = points.latent_of(run, a, session, "point A"), points.latent_of(run, b, session, "point B")
    return ops.decode(run, ops.interpolate(za, zb, steps, method)), method, steps


class InterpolateTab:
    def __init__(self, page: Page, downloads: Downloads):
        self.points = page.points
        self.downloads = downloads

    def layout(self, page: Page) -> None:
        with gr.Row():
            page.a = gr.Number(0, precision=0, minimum=-1, label="A (point)", elem_id="point-a", min_width=90)
            page.b = gr.Number(1, precision=0, minimum=-1, label="B (point)", elem_id="point-b", min_width=90)
            page.method = gr.Radio(list(METHODS), value="slerp", label="Path", elem_id="method")
            page.n_frames = gr.Slider(3, 16, value=9, step=1, label="Frames", elem_id="steps")
        self.button = gr.Button("Decode path A → B", elem_id="interp-btn")
        self.strip = pixel_image(show_label=False, elem_id="strip")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=200):
                page.t = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Position t between A and B",
                                   info="Drag: the frame decodes live and moves on the map.", elem_id="t")
                gr.Markdown("The path is drawn on the map. *slerp* follows the sphere where prior "
                            "samples live; *linear* cuts through the middle, where the norm is "
                            "lower. Point -1 is your image from the Reconstruct tab.")
                self.gif_button = gr.Button("Save as GIF", size="sm", elem_id="gif-btn")
                self.gif_file = gr.File(label="Interpolation GIF", interactive=False, elem_id="gif-file",
                                        visible=False)
            with gr.Column(scale=2, min_width=200):
                self.frame = pixel_image(label="Decoded at t", elem_id="frame", height=240)
                self.view = ui_decode.live_view("Decoded at t (in your browser)", "frame", ["t"], elem_id="frame-live")

    def define_steps(self, page: Page) -> None:
        ends = [page.run_dd, page.a, page.b, page.method]
        page.io.strip = Step(self.interpolate, [*ends, page.n_frames, page.session], [self.strip])
        page.io.frame = Step(self.interpolate_frame, [*ends, page.t, page.session], [self.frame], live=True)
        page.io.frame_recipe = Step(self.frame_recipe, [*ends, page.session], [self.view], live=True, hidden=True)
        page.io.recipes.append(page.io.frame_recipe)
        page.io.gif_inputs = [*ends, page.n_frames, page.session]
        # A run switch hides the previous run's GIF.
        page.io.gif_reset = Step(lambda: gr.File(value=None, visible=False), [], [self.gif_file], live=True, hidden=True)

    def wire(self, page: Page) -> None:
        strip, frame, overlay = page.io.strip, page.io.frame, page.io.overlay
        recipe = page.io.frame_recipe
        def no_path(name, point, attr_point, selection, session):
            marks = overlay.fn(name, point, None, None, METHODS[0], 2, 0.0, attr_point, selection, session)
            return None, None, ui_decode.no_recipe(), marks

        def follow(dep):
            # The frame, live view and map path follow a drawn strip. A refused path (one error message)
            # clears the strip, the frame and the live view, and takes the path off the map.
            then(dep.success(**recipe.io(), **LIVE, **private(), show_progress="hidden"), frame, overlay)
            cleared_on_failure(dep, [self.strip, self.frame, self.view, page.map_html], no_path,
                               [page.run_dd, page.point, page.attr_point, page.selection, page.session])

        for button, end in ((page.set_a, page.a), (page.set_b, page.b)):
            follow(then(button.click(None, [page.point], [end], js="(p) => p"), strip))
        follow(self.button.click(**strip.io(), api_name="interpolate", **HEAVY))
        for listener in (page.a.submit, page.b.submit, page.method.input, page.n_frames.release):
            follow(listener(**strip.io(), **HEAVY, **private()))
        # The slider decodes in the browser; the view sends `server_frame` per move only where it cannot.
        self.view.server_frame(**frame.io(), api_name="interpolate_frame", trigger_mode="always_last",
                               show_progress="hidden", **LIVE)
        page.t.release(**overlay.io(), **LIVE, **private(), show_progress="hidden")
        self.gif_button.click(lambda *args: gr.File(value=self.download_gif(*args), visible=True),
                              page.io.gif_inputs, [self.gif_file], **HEAVY, **private())

    # ---- handlers ---------------------------------------------------------------------------------------
    @user_errors
    def interpolate(self, name: str, a, b, method: str, steps, session):
        """A strip of frames decoded along the path from A to B (on posterior means)."""
        frames, _, steps = path_frames(self.points, self.points.run(name), a, b, method, steps, session)
        return figures.strip(frames)

    @user_errors
    def interpolate_frame(self, name: str, a, b, method: str, t, session):
        """One frame at position t in [0, 1] between A and B (the live slider)."""
        run = self.points.run(name)
        method = choice(method, "method", METHODS)
        t = number(t, "t", 0.0, 1.0)
        za = self.points.latent_of(run, a, session, "point A")
        zb = self.points.latent_of(run, b, session, "point B")
        return figures.show(ops.decode(run, ops.interpolate_at(za, zb, t, method))[0])

    def frame_recipe(self, name: str, a, b, method, session) -> dict:
        """What the browser needs to decode any t: both end latents and the method."""
        try:
            run = self.points.run(name)
            method = choice(method, "method", METHODS)
            za = self.points.latent_of(run, a, session, "point A")
            zb = self.points.latent_of(run, b, session, "point B")
        except UserError:
            return ui_decode.no_recipe()   # the server path says what is wrong
        return ui_decode.recipe(run, "interpolate", za=ui_decode.floats(za), zb=ui_decode.floats(zb), method=method)

    @user_errors
    def download_gif(self, name: str, a, b, method: str, steps, session):
        """Interpolation A → B (and back) as an animated GIF."""
        run = self.points.run(name)
        frames, method, _ = path_frames(self.points, run, a, b, method, steps, session)
        data = figures.make_gif(frames, fps=8, pingpong=True, size=figures.IMAGE_PX)
        return self.downloads.write(run.name, f"interpolation-{method}", "gif", data)
