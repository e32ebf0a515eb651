"""Reconstruct tab: a dataset point, an upload or a drawing, optionally noised or partly hidden, through
the encoder and decoder, with its posterior per dimension. A non-dataset input becomes point -1."""
from __future__ import annotations

from typing import Optional

import gradio as gr
import numpy as np
import torch

from training.errors import UserError

from .. import charts, figures
from .. import latent_ops as ops
from .. import limits
from .. import pictures
from ..checks import choice, number, user_errors
from ..runs import LoadedRun
from .events import HEAVY, LIVE, Page, Step, cleared_on_failure, image_out, pixel_image, private, then

MASKS: dict[str, Optional[tuple]] = {
    "none": None,
    "left half": ("box", (0.0, 0.0, 0.5, 1.0)),
    "right half": ("box", (0.5, 0.0, 1.0, 1.0)),
    "top half": ("box", (0.0, 0.0, 1.0, 0.5)),
    "bottom half": ("box", (0.0, 0.5, 1.0, 1.0)),
    "centre square": ("box", (0.3, 0.3, 0.7, 0.7)),
    "random 25% of pixels": ("random", 0.25),
    "random 50% of pixels": ("random", 0.5),
    "random 75% of pixels": ("random", 0.75),
}
SOURCES = ("dataset point", "upload", "drawing")


class ReconstructTab:
    def __init__(self, page: Page):
        self.points = page.points

    def layout(self, page: Page) -> None:
        with gr.Row():
            self.source = gr.Radio(list(SOURCES), value="dataset point", label="Input", scale=3,
                                   elem_id="recon-source")
            page.recon_point = gr.Number(0, precision=0, minimum=0, label="Point", scale=1,
                                         min_width=100, elem_id="recon-point")
        with gr.Row():
            # image_mode=None: the file reaches pictures.prepare_image untouched (it checks the size
            # from the header before decoding, and handles alpha, 16-bit and animations itself).
            self.upload = gr.Image(label="Upload an image", type="filepath", image_mode=None,
                                   sources=["upload", "clipboard"], height=220, elem_id="upload")
            # guard_sketchpad: Gradio's drawing keeps and decodes whatever a request sends (see limits.py).
            self.sketch = limits.guard_sketchpad(gr.Sketchpad(
                value={"background": np.zeros((256, 256, 3), dtype=np.uint8), "layers": [], "composite": None},
                label="…or draw", type="numpy", image_mode="RGB",
                canvas_size=(256, 256), fixed_canvas=True, layers=False, transforms=(),
                brush=gr.Brush(colors=["#ffffff", "#9a9a9a"], default_size=14, color_mode="fixed"),
                height=300, elem_id="sketch"))
        with gr.Row():
            self.noise = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Add noise (std)", elem_id="noise")
            self.mask = gr.Dropdown(list(MASKS), value="none", label="Hide part of the image", elem_id="mask")
        self.button = gr.Button("Reconstruct", variant="primary", elem_id="recon-btn")
        with gr.Row():
            self.input_image = pixel_image(label="Input", elem_id="rc-input", height=220)
            self.output_image = pixel_image(label="Reconstruction", elem_id="rc-output", height=220)
        self.info = gr.Markdown(elem_id="rc-info")
        self.posterior = image_out(show_label=False, elem_id="rc-posterior")

    def define_steps(self, page: Page) -> None:
        page.io.reconstruct = Step(
            self.reconstruct,
            [page.run_dd, self.source, page.recon_point, self.upload, self.sketch, self.noise, self.mask, page.session],
            [self.input_image, self.output_image, self.posterior, self.info, page.session])

    def wire(self, page: Page) -> None:
        step = page.io.reconstruct

        def follow(dep):
            # Your image may be an end of a live slider's path (point -1): its views get the new latent. A
            # refused input (one error message) clears the previous input's pictures.
            then(dep.success(**page.io.overlay.io(), **LIVE, **private(), show_progress="hidden"), *page.io.recipes)
            cleared_on_failure(dep, step.outputs)

        follow(self.button.click(**step.io(), api_name="reconstruct", **HEAVY))
        for listener in (self.noise.release, self.mask.input, self.source.input, page.recon_point.submit):
            follow(listener(**step.io(), **HEAVY, **private()))
        # An upload or a drawing becomes the input and is reconstructed at once, in one request.
        inputs = [page.run_dd, page.recon_point, self.upload, self.sketch, page.session]
        outputs = [self.source, self.noise, self.mask, *step.outputs]
        follow(self.upload.upload(self.from_upload, inputs, outputs, **HEAVY, **private()))
        follow(self.sketch.input(self.from_drawing, inputs, outputs, trigger_mode="always_last", **HEAVY, **private()))

    # ---- handlers ---------------------------------------------------------------------------------------
    def from_upload(self, name, point, upload, sketch, session):
        """A new upload: the input, shown without noise or mask (those were set for the previous input)."""
        return ("upload", 0.0, "none", *self.reconstruct(name, "upload", point, upload, sketch, 0.0, "none", session))

    def from_drawing(self, name, point, upload, sketch, session):
        """A new stroke: the drawing becomes the input, as an upload does. A blank canvas (the sketchpad also
        reports its first showing) changes nothing."""
        composite = sketch.get("composite") if isinstance(sketch, dict) else sketch
        if composite is None or not np.asarray(composite).any():
            return (gr.skip(),) * 8
        return ("drawing", 0.0, "none", *self.reconstruct(name, "drawing", point, upload, sketch, 0.0, "none", session))

    def _input_image(self, run: LoadedRun, source: str, point, upload, sketch):
        """The chosen input as a float tensor (1, C, H, W) in [0, 1] and a one-line description."""
        if source == "dataset point":
            p = self.points.table_point(run, point)
            thumb = self.points.thumbnails(run, [p])[0]
            if thumb.shape[0] == run.config.model.image_size:
                x = torch.from_numpy(thumb.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
            else:  # thumbnails are at most 64 px: bring larger models' inputs back to size
                x = pictures.prepare_image(run, thumb[..., 0] if thumb.shape[2] == 1 else thumb)
            return x, f"point {p}"
        if source == "upload":
            if upload is None:
                raise UserError("upload an image first (or choose another source)")
            return pictures.prepare_image(run, pictures.read_upload(upload)), "your upload"
        composite = sketch.get("composite") if isinstance(sketch, dict) else sketch
        if composite is None:
            raise UserError("draw something first (or choose another source)")
        a = np.asarray(composite)
        if a.dtype != np.uint8:
            raise UserError("the drawing must be an 8-bit image")
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[:, :, :3]
        return pictures.prepare_image(run, a), "your drawing"

    @user_errors
    def reconstruct(self, name: str, source: str, point, upload, sketch, noise, mask, session):
        """Input (after optional noise / mask), its reconstruction and its posterior per dimension."""
        run = self.points.run(name)
        source = choice(source, "source", SOURCES)
        noise = number(noise, "noise", 0.0, 1.0)
        mask = choice(mask, "mask", MASKS)
        x, what = self._input_image(run, source, point, upload, sketch)
        m = MASKS[mask]
        if noise > 0 or m is not None:
            box = m[1] if m is not None and m[0] == "box" else None
            fraction = m[1] if m is not None and m[0] == "random" else 0.0
            x = pictures.corrupt(x, noise_std=noise, mask_fraction=fraction, mask_box=box, seed=0)
            what += " with " + ", ".join(p for p in (f"noise σ={noise:g}" if noise > 0 else "",
                                                      f"mask: {mask}" if m is not None else "") if p)
        shown_input = (x[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        mu, logvar = ops.encode_images(run, x)
        recon = ops.decode(run, mu[0])[0]
        session = dict(session or {})
        if source != "dataset point" or noise > 0 or m is not None:
            # Your own (or damaged) image becomes point -1 for interpolation and arithmetic.
            session["you"] = {"run": run.name, "mu": mu[0].copy(), "image": shown_input}
            info = [f"Input: {what}. Stored as **point -1** (your image): use -1 as A, B or the attribute input."]
        else:
            info = [f"Input: {what}."]
        if run.latents is not None:
            xy = ops.place_on_map(run, mu[0])[0]
            nn = int(ops.nearest_neighbours(run, mu[0], 1)[0])
            info.append(f"On the map at ({xy[0]:.2f}, {xy[1]:.2f}); nearest exported point: #{nn}.")
        if run.is_vq:
            posterior = None
            info.append("A VQ-VAE has no posterior spread: the encoder output is snapped to the nearest codes.")
        else:
            posterior = charts.posterior_figure(mu[0], logvar[0], dims=ops.dims_by_kl(run)[:32])
            info.append("Posterior per dimension (most informative first): dot = mean, bar = ±2σ, "
                        "grey band = the prior's ±2.")
        return figures.show(shown_input), figures.show(recon), posterior, "  \n".join(info), session
