"""Event plumbing shared by the tabs: concurrency groups, private endpoints, chained follow-up steps.

Concurrency (a classroom of ~30 on a 2-core Space): torch runs one thread per request (app.py), and each
kind of work gets its own limit, so that a slider drag is never stuck behind someone's sample grid:
  * LIVE, not queued (`queue=False`): one decoded image per event (interpolation slider, attribute
    strength, live dimension sliders, a map click) and the map marks. A decode costs a few ms of CPU, a
    trip through Gradio's queue several times more, so these skip it; a drag sends only its latest
    value (trigger_mode="always_last"). They run in the HTTP server's thread pool, which bounds them.
  * DECODE group, queued, limit 8: run switch and map colouring (a 0.3 MB payload), selections: a few
    ms to a few tens of ms each; 8 in flight keep both cores busy.
  * HEAVY group, queued, limit 2 (one per core): grids, strips, traversals, reconstructions with their
    posterior chart, PixelCNN sampling, GIF/CSV downloads. More at once would only slow every one down.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import gradio as gr

from ..points import Points

LIVE = dict(queue=False)
DECODE = dict(concurrency_id="decode", concurrency_limit=8)
HEAVY = dict(concurrency_id="heavy", concurrency_limit=2)

_private_names = itertools.count()


def private() -> dict:
    """Keyword arguments of an event that is not part of the API. Each gets a throwaway api_name: without
    one, Gradio names it after its function and the public endpoint of that function becomes `name_2`."""
    return dict(api_visibility="private", api_name=f"private_{next(_private_names)}")


@dataclass
class Step:
    """A handler with its inputs and outputs, attached to several events (`io()`) or chained after
    one (`then`). live: cheap enough to skip the queue; hidden: no progress indicator."""
    fn: Callable
    inputs: list
    outputs: list
    live: bool = False
    hidden: bool = False

    def io(self) -> dict:
        return dict(fn=self.fn, inputs=self.inputs, outputs=self.outputs)


class Page:
    """What the parts of the page share: the registry's points, the run dropdown and session state,
    components other parts read (set as attributes by their owners), and `io`, the steps other parts
    chain after their own events."""

    def __init__(self, points: Points, names: list[str]):
        self.points = points
        self.names = names
        # recipes: the steps that send the live views what they decode in the browser (explorer/ui_decode.py)
        self.io = SimpleNamespace(recipes=[])


def then(dep, *steps: Step, group: dict = HEAVY, quiet: bool = False):
    """Chain private follow-up steps after an event (each waits for the one before). quiet: a step that
    cannot run for this run (no samples, no attributes...) clears its pictures instead of raising."""
    for step in steps:
        fn = quietly(step.fn, step.outputs) if quiet else step.fn
        dep = dep.then(fn=fn, inputs=step.inputs, outputs=step.outputs, **(LIVE if step.live else group),
                       **private(), show_progress="hidden" if step.hidden else "minimal")
    return dep


def quietly(fn: Callable, outputs: list) -> Callable:
    """fn, but a gr.Error clears the pictures among `outputs` and leaves the rest alone."""
    @functools.wraps(fn)
    def quiet(*args):
        try:
            return fn(*args)
        except gr.Error:
            cleared = [None if isinstance(o, gr.Image) else gr.skip() for o in outputs]
            return cleared[0] if len(cleared) == 1 else tuple(cleared)
    return quiet


def image_out(**kwargs) -> gr.Image:
    """A read-only picture output (PIL in, PNG out), without the toolbar that would cover its top-right
    corner (the Downloads tab writes the pictures as files)."""
    return gr.Image(type="pil", format="png", interactive=False, buttons=[], **kwargs)


def pixel_image(**kwargs) -> gr.Image:
    """A read-only picture of small images, enlarged without smoothing."""
    return image_out(elem_classes=["pixelated"], **kwargs)


def cleared_on_failure(dep, outputs: list, fn: Callable = None, inputs: list = ()):
    """When `dep` is refused (its gr.Error is the one message shown), clear what it would have replaced: an
    old picture next to the error looks like the answer. Without fn, the pictures among `outputs` become
    empty; fn(*inputs) returns the outputs itself (inputs must not include the value that was refused: it
    would be refused again)."""
    if fn is None:
        clear = [None if isinstance(o, gr.Image) else gr.skip() for o in outputs]
        fn = lambda: clear[0] if len(clear) == 1 else tuple(clear)  # noqa: E731
    return dep.failure(fn, list(inputs), outputs, **LIVE, **private(), show_progress="hidden")
