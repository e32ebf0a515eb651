"""Training tab: how the run's latent space formed during training, from its timeline.npz.

A training-step slider snaps to the steps of the run's weight snapshots; for the chosen step the tab shows
the reconstructions of a fixed set of test images under their inputs, the decodings of fixed prior draws
and the KL per latent dimension (each chart on its own scale: the first steps can have a KL many times the
final one; the caption gives the total). A VQ-VAE has neither a N(0, I) prior nor a KL: its chart is the
codebook use at that step, and the prior draws are hidden with a note. Every frame is drawn from
timeline.npz alone (no model is loaded), so the slider costs a few milliseconds of drawing.
"""
from __future__ import annotations

import functools
import os
import threading
from typing import Optional

import gradio as gr
import numpy as np
from PIL import Image

from training.errors import UserError
from training.runfolder import TIMELINE_FILE, has_timeline_file, is_codebook_timeline, load_timeline

from .. import charts, figures
from ..checks import user_errors, whole_number
from ..points import Points
from .events import DECODE, LIVE, Page, image_out, pixel_image, private

NO_TIMELINE = ("This run has no training timeline: train it with weight snapshots "
               "(`python -m training train ... --snapshots 10`), then run `python -m training export RUN`.")
KL_LABEL, CODEBOOK_LABEL = "KL per dimension", "Codebook use"
# The slider's range before a run sets it: the server checks an API caller's value against it, so it spans
# every step a run can have.
MAX_STEP = 10 ** 9
_CACHED_TIMELINES = 16


@functools.lru_cache(maxsize=_CACHED_TIMELINES)
def _read_timeline(path: str, stamp: tuple) -> dict:
    """timeline.npz of a run folder, shared read-only; `stamp` (mtime, size) reloads a re-exported file."""
    arrays = load_timeline(path)
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


_read_lock = threading.Lock()


def timeline_of(path: str) -> Optional[dict]:
    """The run's timeline arrays, or None when it has no timeline.npz (UserError when it is unusable)."""
    if not has_timeline_file(path):
        return None
    stat = os.stat(os.path.join(path, TIMELINE_FILE))
    with _read_lock:
        return _read_timeline(path, (stat.st_mtime_ns, stat.st_size))


def snap(steps: np.ndarray, step: int) -> int:
    """Index of the snapshot step nearest to `step` (the earlier one on a tie)."""
    return int(np.argmin(np.abs(steps.astype(np.int64) - int(step))))


def _hwc(images: np.ndarray) -> np.ndarray:
    """(B, C, h, w) -> (B, h, w, C), as the figures take images."""
    return np.ascontiguousarray(np.asarray(images).transpose(0, 2, 3, 1))


def frame(arrays: dict, k: int) -> tuple[str, Image.Image, Optional[Image.Image], Optional[Image.Image]]:
    """(caption, inputs over reconstructions, prior samples or None, KL or codebook-use chart or None) of
    snapshot k."""
    steps = arrays["steps"]
    inputs, recon = _hwc(arrays["inputs"]), _hwc(arrays["reconstructions"][k])
    pairs = figures.grid(np.concatenate([inputs, recon]), nrow=len(inputs))
    samples = figures.grid(_hwc(arrays["samples"][k]), nrow=arrays["samples"].shape[1]) \
        if "samples" in arrays else None
    caption = (f"**Step {int(steps[k]):,}** (snapshot {k + 1} of {len(steps)}: "
               f"{', '.join(f'{int(s):,}' for s in steps)}). Top row: test images; below: their reconstructions.")
    if is_codebook_timeline(arrays):
        perplexity, used = float(arrays["perplexity"][k]), float(arrays["codes_used"][k])
        chart = charts.codebook_use_figure(arrays["code_counts"][k], perplexity, used)
        num_codes = arrays["code_counts"].shape[1]
        caption += f" Codebook use: perplexity {perplexity:.1f}, {round(used * num_codes)} of {num_codes} codes used."
        caption += " No prior draws or KL: a VQ-VAE has no N(0, I) prior (its PixelCNN prior is trained afterwards)."
        return caption, pairs, samples, chart
    kl = arrays["kl_per_dim"]
    chart = charts.kl_bar_figure(kl[k]) if np.any(kl[k] > 0) else None
    active = int((kl[k] > 0.01).sum())
    if np.any(kl[k] > 0):
        caption += f" KL: {float(kl[k].sum()):.2f} nats, {active} of {kl.shape[1]} dimensions above 0.01."
    if samples is None:
        caption += " No prior samples: this model has no N(0, I) prior."
    return caption, pairs, samples, chart


class TimelineTab:
    def __init__(self, page: Page):
        self.points: Points = page.points

    def layout(self, page: Page) -> None:
        self.caption = gr.Markdown(elem_id="timeline-note")
        self.step = gr.Slider(0, MAX_STEP, value=0, step=1, label="Training step (snaps to the saved snapshots)",
                              elem_id="timeline-step", visible=False)
        with gr.Row():
            self.earlier = gr.Button("◀ Earlier snapshot", elem_id="timeline-earlier", size="sm")
            self.later = gr.Button("Later snapshot ▶", elem_id="timeline-later", size="sm")
        self.pairs = pixel_image(label="Test images (top) and their reconstructions", elem_id="timeline-recon")
        self.samples = pixel_image(label="Decoded prior draws (the same draws at every step)",
                                   elem_id="timeline-samples")
        self.kl = image_out(label=KL_LABEL, elem_id="timeline-kl")

    def define_steps(self, page: Page) -> None:
        pass  # nothing chains after this tab's events

    def wire(self, page: Page) -> None:
        views = [self.step, self.caption, self.pairs, self.samples, self.kl]
        # triggers=None: on page load and whenever the run changes.
        gr.on(None, self.show_run, inputs=[page.run_dd], outputs=views, **DECODE, **private())
        self.step.release(self.timeline, [page.run_dd, self.step], views, api_name="timeline", **LIVE)
        self.earlier.click(self.shift_earlier, [page.run_dd, self.step], views, **LIVE, **private())
        self.later.click(self.shift_later, [page.run_dd, self.step], views, **LIVE, **private())

    def _arrays(self, name: str) -> Optional[dict]:
        return timeline_of(self.points.run(name).path)

    def _show(self, arrays: Optional[dict], k: Optional[int], slider: bool = False):
        if arrays is None:
            return gr.update(visible=False), NO_TIMELINE, None, None, None
        steps = arrays["steps"]
        k = len(steps) - 1 if k is None else k
        caption, pairs, samples, chart = frame(arrays, k)
        value = int(steps[k])
        if slider:
            low, high = int(steps[0]), int(steps[-1])
            value = gr.update(minimum=low, maximum=max(high, low + 1), value=value, visible=True)
            # A run switch sets what the run's timeline shows; the steps within a run keep it.
            codebook = is_codebook_timeline(arrays)
            samples = gr.update(value=samples, visible=samples is not None)
            chart = gr.update(value=chart, label=CODEBOOK_LABEL if codebook else KL_LABEL)
        return value, caption, pairs, samples, chart

    @user_errors
    def show_run(self, name: str):
        """The run's last snapshot, with the slider set to the run's snapshot steps."""
        try:
            arrays = self._arrays(name)
        except UserError as e:
            return gr.update(visible=False), f"Training timeline: {e}", None, None, None
        return self._show(arrays, None, slider=True)

    @user_errors
    def timeline(self, name: str, step):
        """The snapshot nearest to a training step: (its step, caption, test images over their
        reconstructions, decoded prior draws, KL per dimension chart; a VQ-VAE: no prior draws and its
        codebook-use chart). A run without timeline.npz: a note saying how to make one, and no pictures."""
        arrays = self._arrays(name)
        step = whole_number(step, "training step", 0, MAX_STEP)
        return self._show(arrays, None if arrays is None else snap(arrays["steps"], step))

    def _shift(self, name: str, step, by: int):
        arrays = self._arrays(name)
        if arrays is None:
            return self._show(None, None)
        k = snap(arrays["steps"], whole_number(step, "training step", 0, MAX_STEP)) + by
        return self._show(arrays, int(np.clip(k, 0, len(arrays["steps"]) - 1)))

    @user_errors
    def shift_earlier(self, name: str, step):
        return self._shift(name, step, -1)

    @user_errors
    def shift_later(self, name: str, step):
        return self._shift(name, step, +1)
