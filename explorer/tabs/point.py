"""Point tab: the clicked point's image, reconstruction, description and nearest neighbours; a box or
lasso selection's images and decoded mean."""
from __future__ import annotations

import gradio as gr
import numpy as np

from .. import figures
from .. import latent_ops as ops
from ..checks import user_errors
from ..points import YOUR_IMAGE
from ..runs import LoadedRun
from .events import DECODE, LIVE, Page, Step, pixel_image, then

NEIGHBOURS = 8            # in two rows of four: 96-px tiles or larger fit the tab beside the map
MAX_SELECTION_SHOWN = 24  # images of a box/lasso selection shown (one picture: one file to send, not 24)
SELECTION_PX = 540        # the selection picture's column (three quarters of the tab) holds rows this wide


class PointTab:
    def __init__(self, page: Page):
        self.points = page.points

    def layout(self, page: Page) -> None:
        with gr.Row():
            self.image = pixel_image(label="Image", elem_id="pt-image", height=240)
            self.recon = pixel_image(label="Reconstruction", elem_id="pt-recon", height=240)
        self.info = gr.Markdown(elem_id="pt-info")
        gr.Markdown("Nearest neighbours in latent space (Euclidean distance between posterior means):")
        self.neighbours = pixel_image(show_label=False, elem_id="neighbours")
        gr.Markdown("#### Selection (box / lasso on the map)")
        page.selection = gr.Textbox(label="Selected points (numbers, comma separated; Enter to show)",
                                    elem_id="selection", max_lines=2)
        with gr.Row():
            self.gallery = pixel_image(label="Selected images", scale=3, elem_id="sel-gallery")
            self.mean = pixel_image(label="Decoded mean of the selection", scale=1, elem_id="sel-mean", height=220)
        self.sel_info = gr.Markdown(elem_id="sel-info")

    def define_steps(self, page: Page) -> None:
        page.io.point = Step(self.show_point, [page.run_dd, page.point, page.session],
                             [self.image, self.recon, self.info, self.neighbours], live=True)
        page.io.selection = Step(self.show_selection, [page.run_dd, page.selection],
                                 [self.gallery, self.mean, self.sel_info])

    def wire(self, page: Page) -> None:
        then(page.point.input(**page.io.point.io(), api_name="point", trigger_mode="always_last", **LIVE),
             page.io.overlay)
        then(page.selection.submit(**page.io.selection.io(), api_name="selection", **DECODE), page.io.overlay)

    # ---- handlers ---------------------------------------------------------------------------------------
    @user_errors
    def show_point(self, name: str, point, session):
        """One point: its image, its reconstruction, what it is, its nearest neighbours."""
        points = self.points
        run = points.run(name)
        p = points.point_number(run, point)
        z = points.latent_of(run, p, session)
        image = points.image_of(run, p, session)
        recon = ops.decode(run, z)[0]
        info = describe_point(run, p) if p != YOUR_IMAGE else "**your image** (point -1)"
        nn = ops.nearest_neighbours(run, z, NEIGHBOURS + 1)
        nn = [int(i) for i in nn if int(i) != p][:NEIGHBOURS]
        strip = figures.captioned_grid(points.thumbnails(run, nn), [f"#{i}" for i in nn], nrow=NEIGHBOURS // 2)
        return figures.show(image), figures.show(recon), info, strip

    @user_errors
    def show_selection(self, name: str, selection: str):
        """A box/lasso selection: its images and the decoded mean of its latents."""
        run = self.points.run(name)
        rows = self.points.selected_rows(run, selection)
        if not rows:
            return None, None, "Nothing selected. Use the box or lasso tool (top right of the map) to select points."
        shown = rows[:MAX_SELECTION_SHOWN]
        grid = figures.captioned_grid(self.points.thumbnails(run, shown), [f"#{i}" for i in shown], nrow=8,
                                      max_width=SELECTION_PX)
        mean = ops.decode(run, ops.mean_latent_of_selection(run, rows))[0]
        return grid, figures.show(mean), selection_markdown(run, rows)


def describe_point(run: LoadedRun, p: int) -> str:
    lat = run.latents
    parts = [f"**point {p}**"]
    if "index" in lat:
        parts.append(f"dataset image {int(lat['index'][p])}")
    if "split" in lat:
        parts.append("test split" if int(lat["split"][p]) == 1 else "train split")
    lines = [" · ".join(parts)]
    if "labels" in lat and run.label_names:
        lines.append(", ".join(f"{info.title} = {info.format(v)}" for info, v in zip(run.labels, lat["labels"][p])))
    x, y = lat["xy"][p]
    lines.append(f"map position ({x:.2f}, {y:.2f}) · right: the decoded posterior mean")
    return "  \n".join(lines)


def selection_markdown(run: LoadedRun, rows: list) -> str:
    info = f"**{len(rows)} points selected**" + (
        f" (showing the first {MAX_SELECTION_SHOWN})" if len(rows) > MAX_SELECTION_SHOWN else "")
    if run.label_names and "labels" in run.latents:
        labels = run.latents["labels"][rows]
        info += "".join(f"  \n{label_summary(label, labels[:, k])}" for k, label in enumerate(run.labels))
    return info + "  \nRight: the decoded mean of their latents."


def label_summary(label, codes: np.ndarray, most: int = 6) -> str:
    """One label over a selection: counts of its classes, most frequent first ('digit: 3 ×12, 8 ×5'), or the
    mean and range of a continuous value ('x: mean 0.42 (0.1 – 0.9)')."""
    if label.is_categorical:
        values, counts = np.unique(np.asarray(codes, dtype=np.float64), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        shown = ", ".join(f"{label.format(values[i])} ×{int(counts[i])}" for i in order[:most])
        more = f", {len(order) - most} more" if len(order) > most else ""
        return f"{label.title}: {shown}{more}"
    real = label.real(codes)
    low, high = label.format_real(float(real.min())), label.format_real(float(real.max()))
    if low == high:
        return f"{label.title}: all {low}"
    return f"{label.title}: mean {label.format_real(float(real.mean()))} ({low} – {high})"
