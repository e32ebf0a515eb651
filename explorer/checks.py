"""The endpoint boundary: values from the page or from gradio_client are checked here, once, and bad
input becomes a one-line `gr.Error`; the server keeps serving.

`user_errors` wraps every endpoint handler; `whole_number`, `number` and `choice` check one value each
and raise `UserError` with the message the user reads.
"""
from __future__ import annotations

import functools
import html
import logging
import math
from typing import Any, Callable, Iterable

import gradio as gr
import numpy as np

from training.errors import UserError

from .tempfiles import image_files

log = logging.getLogger("explorer.ui")


def user_errors(fn: Callable) -> Callable:
    """Show UserError (bad input) as a one-line gr.Error; report anything else as an internal error
    without killing the server. Messages are HTML-escaped: they may echo what a user typed. Images in
    the result leave as files (see `tempfiles.ImageFiles`)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return image_files.replace_images(fn(*args, **kwargs))
        except gr.Error:
            raise
        except UserError as e:
            raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None
        except Exception as e:  # a bug: keep serving, log the traceback, show one line
            log.exception("internal error in %s", fn.__name__)
            text = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise gr.Error(html.escape(f"internal error ({text})", quote=False), print_exception=False) from None
    return wrapper


def whole_number(value: Any, what: str, lo: int, hi: int) -> int:
    if value is None or value == "":
        raise UserError(f"{what} is missing")
    if isinstance(value, bool):
        raise UserError(f"{what} must be a whole number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UserError(f"{what} must be a whole number, got {value[:40]!r}")
    if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(float(value)) \
            or float(value) != int(value):
        raise UserError(f"{what} must be a whole number, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise UserError(f"{what} must be between {lo} and {hi}, got {value}")
    return value


def number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise UserError(f"{what} must be a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {str(value)[:40]!r}")
    if not math.isfinite(v) or not lo <= v <= hi:
        raise UserError(f"{what} must be between {lo:g} and {hi:g}, got {value}")
    return v


def choice(value: Any, what: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"unknown {what} {str(value)[:60]!r} (choose from: {', '.join(choices)})")
    return value
