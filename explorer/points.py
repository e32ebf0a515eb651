"""Runs and points as endpoints receive them: a run name, a point number, a selection typed as text.

Points are rows of the run's exported latent table (latents.npz); point -1 is "your image", the last
upload, drawing or corrupted image reconstructed in this browser session (kept in gr.State as
`session["you"]`). Everything here checks what it is given and raises `UserError` with the message the
user reads.
"""
from __future__ import annotations

import html
from typing import Any, Optional

import numpy as np

from training.errors import UserError

from . import latent_ops as ops
from .checks import whole_number
from .runs import LoadedRun, RunRegistry

YOUR_IMAGE = -1           # point number of the session's own image


def require_latents(run: LoadedRun) -> dict:
    if run.latents is None:
        raise UserError(f"run {run.name!r} has no exported latents (run `python -m training export` on it)")
    return run.latents


class Points:
    """Run and point look-ups over a RunRegistry shared by every user (models are loaded once)."""

    def __init__(self, registry: RunRegistry):
        self.registry = registry

    # ---- runs -----------------------------------------------------------------------------------------
    def run(self, name: Any) -> LoadedRun:
        # The registry accepts only names it discovered: a path or '../x' is an unknown run.
        return self.registry.get(name)

    def run_choices(self) -> list[str]:
        return self.registry.ok_names()

    def broken_runs_note(self) -> str:
        broken = [e for e in self.registry.entries() if e.error]
        if not broken:
            return ""
        lines = [f"- `{html.escape(e.name)}`: {html.escape(e.error)}" for e in broken]
        return "Runs that cannot be shown:\n" + "\n".join(lines)

    # ---- points ---------------------------------------------------------------------------------------
    @staticmethod
    def n_points(run: LoadedRun) -> int:
        require_latents(run)
        return run.n_points

    def point_number(self, run: LoadedRun, point: Any, what: str = "point") -> int:
        return whole_number(point, what, YOUR_IMAGE, self.n_points(run) - 1)

    def table_point(self, run: LoadedRun, point: Any, what: str = "point") -> int:
        """A row of the table (not your image)."""
        return whole_number(point, what, 0, self.n_points(run) - 1)

    @staticmethod
    def yours(run: LoadedRun, session: Optional[dict]) -> dict:
        mine = (session or {}).get("you")
        if not mine or mine.get("run") != run.name:
            raise UserError("point -1 is your own image: reconstruct an upload or a drawing first "
                            "(Reconstruct tab)")
        return mine

    def latent_of(self, run: LoadedRun, point: Any, session: Optional[dict], what: str = "point") -> np.ndarray:
        p = self.point_number(run, point, what)
        if p == YOUR_IMAGE:
            return np.asarray(self.yours(run, session)["mu"], dtype=np.float32)
        return ops.table_latent(run, p)

    def image_of(self, run: LoadedRun, point: Any, session: Optional[dict]) -> np.ndarray:
        p = self.point_number(run, point)
        if p == YOUR_IMAGE:
            return np.asarray(self.yours(run, session)["image"], dtype=np.uint8)
        return self.thumbnails(run, [p])[0]

    @staticmethod
    def thumbnails(run: LoadedRun, rows: list) -> np.ndarray:
        """The stored thumbnails of checked table rows, uint8 (B, h, w, C)."""
        if "thumbs" not in require_latents(run):
            raise UserError(f"run {run.name!r} has no thumbnails in latents.npz")
        return ops.table_images(run, rows)

    def selected_rows(self, run: LoadedRun, text: Any, strict: bool = True) -> list[int]:
        """Point numbers typed as 'a, b; c'. strict=False skips what is not a point instead of refusing."""
        if text is None or (isinstance(text, str) and not text.strip()):
            return []
        if not isinstance(text, str):
            if strict:
                raise UserError("selection must be point numbers separated by commas")
            return []
        n = self.n_points(run)
        rows = []
        for part in text.replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            try:
                rows.append(whole_number(part, "selected point", 0, n - 1))
            except UserError:
                if strict:
                    raise
        if len(rows) > n:
            raise UserError("selection has more points than the table")
        return rows
