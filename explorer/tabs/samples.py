"""Samples tab: a grid of images drawn from the run's prior (a VQ-VAE: through its PixelCNN prior)."""
from __future__ import annotations

import math

import gradio as gr
from PIL import Image

from training.errors import UserError

from .. import figures
from .. import latent_ops as ops
from ..checks import number, user_errors, whole_number
from ..runs import LoadedRun
from .events import HEAVY, Page, Step, pixel_image, private, then


def sample_note(run: LoadedRun) -> str:
    if run.config.model.name == "ae":
        # The draws are still decoded: how poor they look beside a VAE's is the lesson.
        return ("**An autoencoder has no prior to sample from.** These are decodings of z ~ N(0, T²·I) anyway: "
                "nothing pulled this model's codes towards that distribution, so many draws land where the "
                "decoder was never trained and come out as blends or smudges. Compare a VAE's samples.")
    if run.has_prior:
        if run.is_vq:
            return "Samples: codes drawn from the run's PixelCNN prior, then decoded."
        return "Samples: z ~ N(0, T²·I) decoded. Lower temperature T: more typical, less varied images."
    return ("**This VQ-VAE has no prior to sample from.** A VQ-VAE learns a codebook, not a "
            "distribution: train a PixelCNN over its code grids with "
            "`python -m training train-prior RUN_FOLDER`, then reload the app.")


def sample_grid(run: LoadedRun, n, seed, temperature) -> tuple[Image.Image, int]:
    """The sample grid for endpoint values (checked here), and the checked seed."""
    n = whole_number(n, "number of samples", 1, 64)
    seed = whole_number(seed, "seed", 0, 2**31 - 1)
    temperature = number(temperature, "temperature", 0.05, 3.0)
    if not run.has_prior:
        raise UserError(f"run {run.name!r} has no prior to sample from (train one with `python -m training train-prior`)")
    images = ops.sample_prior(run, n, seed=seed, temperature=temperature)
    return figures.strip(images, per_row=max(1, int(math.ceil(math.sqrt(n))))), seed


class SamplesTab:
    def __init__(self, page: Page):
        self.points = page.points

    def layout(self, page: Page) -> None:
        page.sample_note = gr.Markdown(elem_id="sample-note")
        with gr.Row():
            page.n_samples = gr.Dropdown([4, 9, 16, 25, 36, 49, 64], value=36, label="Images",
                                         elem_id="n-samples", scale=1, min_width=90)
            page.seed = gr.Number(0, precision=0, minimum=0, maximum=2**31 - 1, label="Seed",
                                  elem_id="seed", scale=1, min_width=90)
            page.temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature",
                                         elem_id="temperature", scale=3)
        with gr.Row():
            self.button = gr.Button("Sample", variant="primary", elem_id="sample-btn")
            self.new_seed = gr.Button("New seed", elem_id="new-seed")
        self.samples = pixel_image(show_label=False, elem_id="samples")

    def define_steps(self, page: Page) -> None:
        page.io.sample = Step(self.sample, [page.run_dd, page.n_samples, page.seed, page.temperature], [self.samples])

    def wire(self, page: Page) -> None:
        step = page.io.sample
        self.button.click(**step.io(), api_name="sample", **HEAVY)
        then(self.new_seed.click(None, None, [page.seed], js="() => Math.floor(Math.random() * 1000000)"), step)
        for listener in (page.temperature.release, page.n_samples.input, page.seed.submit):
            listener(**step.io(), **HEAVY, **private())

    @user_errors
    def sample(self, name: str, n, seed, temperature):
        """A grid of prior samples (VQ-VAE: through its PixelCNN prior)."""
        return sample_grid(self.points.run(name), n, seed, temperature)[0]
