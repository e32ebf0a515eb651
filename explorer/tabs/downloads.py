"""Downloads tab: files for slides and notebooks (sample grid, traversal grid, interpolation GIF, latent
table as CSV, attribute vectors as JSON), using the settings of the tabs they come from."""
from __future__ import annotations

import gradio as gr

from training.errors import UserError

from .. import figures
from ..checks import user_errors
from ..points import require_latents
from ..tempfiles import Downloads
from .disentangle import DisentangleTab
from .events import HEAVY, Page, Step
from .interpolate import InterpolateTab
from .samples import sample_grid


class DownloadsTab:
    def __init__(self, page: Page, downloads: Downloads, disentangle: DisentangleTab, interpolate: InterpolateTab):
        self.points = page.points
        self.downloads = downloads
        self.disentangle = disentangle
        self.interpolate = interpolate

    def layout(self, page: Page) -> None:
        gr.Markdown("Files for slides and notebooks. The grids use the settings of the Samples, "
                    "Disentangle and Interpolate tabs.")
        with gr.Row():
            self.samples = gr.Button("Sample grid (PNG)", elem_id="dl-samples")
            self.traversal = gr.Button("Traversal grid (PNG)", elem_id="dl-traversal")
            self.gif = gr.Button("Interpolation (GIF)", elem_id="dl-gif")
        with gr.Row():
            self.latents = gr.Button("Latents + map coordinates (CSV)", elem_id="dl-latents")
            self.attributes = gr.Button("Attribute vectors (JSON)", elem_id="dl-attrs")
        self.file = gr.File(label="Download", interactive=False, elem_id="dl-file", height=120)

    def define_steps(self, page: Page) -> None:
        # A file of the previous run next to the new run's pictures would pass for the new run's.
        page.io.downloads_reset = Step(lambda: None, [], [self.file], live=True, hidden=True)

    def wire(self, page: Page) -> None:
        out = [self.file]
        self.samples.click(self.download_samples, [page.run_dd, page.n_samples, page.seed, page.temperature], out,
                           api_name="download_samples", **HEAVY)
        self.traversal.click(self.download_traversal, [page.run_dd, page.trav_point, page.span, page.session], out,
                             api_name="download_traversal", **HEAVY)
        self.gif.click(self.interpolate.download_gif, page.io.gif_inputs, out, api_name="download_gif", **HEAVY)
        self.latents.click(self.download_latents, [page.run_dd], out, api_name="download_latents", **HEAVY)
        self.attributes.click(self.download_attributes, [page.run_dd], out, api_name="download_attributes", **HEAVY)

    # ---- handlers ---------------------------------------------------------------------------------------
    @user_errors
    def download_samples(self, name: str, n, seed, temperature):
        """Sample grid as PNG."""
        run = self.points.run(name)
        grid, seed = sample_grid(run, n, seed, temperature)
        return self.downloads.write(run.name, f"samples-seed{seed}", "png", figures.to_png_bytes(grid))

    @user_errors
    def download_traversal(self, name: str, point, span, session):
        """Traversal grid as PNG."""
        run, grid = self.disentangle.traversal_picture(name, point, span, session)
        return self.downloads.write(run.name, "traversal", "png", figures.to_png_bytes(grid))

    @user_errors
    def download_latents(self, name: str):
        """Latent table with map coordinates and labels as CSV."""
        run = self.points.run(name)
        require_latents(run)
        return self.downloads.write(run.name, "latents", "csv", figures.latents_csv(run))

    @user_errors
    def download_attributes(self, name: str):
        """Attribute vectors (attributes.json)."""
        run = self.points.run(name)
        if not run.attributes:
            raise UserError(f"run {run.name!r} has no attributes.json (run `python -m training export` on it)")
        return self.downloads.write(run.name, "attributes", "json", figures.attributes_json(run))
