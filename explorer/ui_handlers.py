"""What each button, slider and map event of the app does: one method per named API endpoint.

The latent arithmetic, images and payloads come from the back end (`explorer.latent_ops`,
`explorer.figures`, `explorer.runs`); this module turns UI values into calls to it and its results into
what the components show. Every public method validates its inputs (they may come from gradio_client
as well as from the page) and reports bad input as `gr.Error` with a one-line message; the server keeps
serving.

Points are rows of the run's exported latent table (latents.npz); point -1 is "your image", the last
upload, drawing or corrupted image reconstructed in this browser session (kept in gr.State).
"""
from __future__ import annotations

import functools
import html
import io
import itertools
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Optional

import gradio as gr
import numpy as np

from training.errors import UserError

from . import figures
from . import latent_ops as ops
from . import ui_map
from .runs import LoadedRun, RunRegistry

log = logging.getLogger("explorer.ui")

YOUR_IMAGE = -1           # point number of the session's own image
LIVE_DIMS = 6             # live sliders for the most active latent dimensions
IMAGE_PX = 224            # single images are enlarged (nearest neighbour) to about this size
GRID_PX = 640             # grids and strips: longest side about this size
NEIGHBOURS = 8
MAX_SELECTION_SHOWN = 48  # images of a box/lasso selection shown (one picture: one file to send, not 48)
STRIP_STRENGTHS = np.linspace(-3.0, 3.0, 7)
TRAVERSAL_STEPS = 9
DOWNLOAD_MAX_AGE_S = 3600

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
METHODS = ("linear", "slerp")


# ---- errors -----------------------------------------------------------------------------------------
def user_errors(fn: Callable) -> Callable:
    """Show UserError (bad input) as a one-line gr.Error; report anything else as an internal error
    without killing the server. Messages are HTML-escaped: they may echo what a user typed."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return _images_as_files(fn(*args, **kwargs))
        except gr.Error:
            raise
        except UserError as e:
            raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None
        except Exception as e:  # a bug: keep serving, log the traceback, show one line
            log.exception("internal error in %s", fn.__name__)
            text = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise gr.Error(html.escape(f"internal error ({text})", quote=False), print_exception=False) from None
    return wrapper


# ---- images out ---------------------------------------------------------------------------------------
class _ImageFiles:
    """Shown images leave as PNG files under unique names.

    Given a PIL image, Gradio writes it into its cache under a name made from its content, in place: when
    two users decode the same frame at the same moment (a class following the teacher's slider), one
    request rewrites the file while the other's browser is reading it and gets a truncated image
    (measured: 3 of 77 requests with 8 clients). A file path is copied into the cache atomically instead.
    """

    def __init__(self, max_age_s: float = 600.0, prune_every: int = 500):
        self.folder = tempfile.mkdtemp(prefix="vae-explorer-images-")
        self.max_age_s = max_age_s
        self.prune_every = prune_every
        self._written = itertools.count(1)

    def write(self, image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        path = os.path.join(self.folder, f"{uuid.uuid4().hex[:16]}.png")
        with open(path, "wb") as f:
            f.write(buffer.getvalue())
        if next(self._written) % self.prune_every == 0:
            self.prune()
        return path

    def prune(self) -> None:
        """Gradio has its own copy by now: drop ours once they are old."""
        now = time.time()
        for entry in os.scandir(self.folder):
            try:
                if now - entry.stat().st_mtime > self.max_age_s:
                    os.remove(entry.path)
            except OSError:
                pass


_image_files = _ImageFiles()


def _images_as_files(result):
    from PIL import Image

    if isinstance(result, Image.Image):
        return _image_files.write(result)
    if isinstance(result, tuple):
        return tuple(_image_files.write(r) if isinstance(r, Image.Image) else r for r in result)
    return result


# ---- small validators (values can come from the API, not only from the page's widgets) --------------
def _int(value: Any, what: str, lo: int, hi: int) -> int:
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


def _float(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise UserError(f"{what} must be a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {str(value)[:40]!r}")
    if not math.isfinite(v) or not lo <= v <= hi:
        raise UserError(f"{what} must be between {lo:g} and {hi:g}, got {value}")
    return v


def _choice(value: Any, what: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"unknown {what} {str(value)[:60]!r} (choose from: {', '.join(choices)})")
    return value


def _show(image: np.ndarray, size: int = IMAGE_PX):
    """uint8 (H, W, C) -> PIL image enlarged with nearest neighbour (small images stay crisp)."""
    return figures.upscale(image, size)


def _grid(images: np.ndarray, nrow: int, size: int = GRID_PX):
    grid = figures.image_grid(images, nrow=nrow)
    return figures.upscale(grid, size) if max(grid.size) < size else grid


def _captioned_grid(images: np.ndarray, captions: list, nrow: int, tile: int = 64):
    """Thumbnails (B, h, w, C) uint8 in rows of `nrow`, each enlarged to `tile` px with its caption below.
    One picture instead of a gallery of files: a click sends three images, not ten."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    n = len(images)
    cols = max(1, min(nrow, n))
    rows = int(math.ceil(n / cols))
    pad, text_h = 4, 16
    sheet = Image.new("RGB", (cols * (tile + pad) + pad, rows * (tile + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (image, caption) in enumerate(zip(images, captions)):
        r, c = divmod(k, cols)
        x, y = pad + c * (tile + pad), pad + r * (tile + text_h + pad)
        thumb = figures.to_pil(image).convert("RGB")
        factor = max(1, tile // max(thumb.size))
        thumb = thumb.resize((thumb.size[0] * factor, thumb.size[1] * factor), Image.Resampling.NEAREST)
        if max(thumb.size) > tile:
            thumb = thumb.resize((tile, tile), Image.Resampling.BOX)
        sheet.paste(thumb, (x + (tile - thumb.size[0]) // 2, y + (tile - thumb.size[1]) // 2))
        width = draw.textlength(caption, font=font)
        draw.text((x + (tile - width) / 2, y + tile + 1), caption, fill="#333333", font=font)
    return sheet


def _hidden_image():
    return gr.Image(value=None, visible=False)


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3g}"
    return str(value)


class Explorer:
    """The app's operations over a RunRegistry shared by every user (models are loaded once)."""

    def __init__(self, registry: RunRegistry):
        self.registry = registry
        self._download_dir = tempfile.mkdtemp(prefix="vae-explorer-downloads-")
        self._download_lock = threading.Lock()

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
    def _n_points(self, run: LoadedRun) -> int:
        if run.latents is None:
            raise UserError(f"run {run.name!r} has no exported latents (run `python -m training export` on it)")
        return run.n_points

    def point_number(self, run: LoadedRun, point: Any, what: str = "point") -> int:
        return _int(point, what, YOUR_IMAGE, self._n_points(run) - 1)

    def _yours(self, run: LoadedRun, session: Optional[dict]) -> dict:
        mine = (session or {}).get("you")
        if not mine or mine.get("run") != run.name:
            raise UserError("point -1 is your own image: reconstruct an upload or a drawing first "
                            "(Reconstruct tab)")
        return mine

    def latent_of(self, run: LoadedRun, point: Any, session: Optional[dict], what: str = "point") -> np.ndarray:
        p = self.point_number(run, point, what)
        if p == YOUR_IMAGE:
            return np.asarray(self._yours(run, session)["mu"], dtype=np.float32)
        return ops.table_latent(run, p)

    def image_of(self, run: LoadedRun, point: Any, session: Optional[dict]) -> np.ndarray:
        p = self.point_number(run, point)
        if p == YOUR_IMAGE:
            return np.asarray(self._yours(run, session)["image"], dtype=np.uint8)
        return ops.table_images(run, [p])[0]

    def _describe_point(self, run: LoadedRun, p: int) -> str:
        lat = run.latents
        parts = [f"**point {p}**"]
        if "index" in lat:
            parts.append(f"dataset image {int(lat['index'][p])}")
        if "split" in lat:
            parts.append("test split" if int(lat["split"][p]) == 1 else "train split")
        lines = [" · ".join(parts)]
        if "labels" in lat and run.label_names:
            labels = ", ".join(f"{n} = {_fmt(v)}" for n, v in zip(run.label_names, lat["labels"][p]))
            lines.append(labels)
        x, y = lat["xy"][p]
        lines.append(f"map position ({x:.2f}, {y:.2f})")
        return "  \n".join(lines)

    # ---- endpoints: run and map -----------------------------------------------------------------------
    @user_errors
    def select_run(self, name: str):
        """Model card, map, colour and attribute choices, live-slider labels for a run."""
        run = self.run(name)
        card = run.card_markdown()
        if run.latents is None:
            card += ("\n**This run has no latent table yet**: run `python -m training export "
                     f"{html.escape(run.path)}` to get the map, interpolation and attribute tabs.\n")
        colour_options = figures.color_options(run)
        default_colour = run.label_names[0] if run.label_names else "none"
        map_value = (figures.map_payload(run, default_colour) if run.latents is not None
                     else ui_map.message_value("No map: this run has no exported latents (latents.npz)."))
        attributes = run.attribute_names
        return (
            card,
            gr.HTML(value=map_value, overlay=ui_map.empty_overlay()),
            gr.Dropdown(choices=colour_options, value=default_colour),
            gr.Dropdown(choices=attributes, value=attributes[0] if attributes else None),
            *self._live_slider_updates(run),
            self._sample_note(run),
        )

    @user_errors
    def first_points(self, name: str):
        """After a run switch: clicked point, A, B, attribute input, traversal point, reconstruction point
        back to the first points of the new run's table, no selection."""
        run = self.run(name)
        n = run.n_points
        return 0, 0, min(1, max(n - 1, 0)), 0, 0, 0, ""

    def _live_slider_updates(self, run: LoadedRun) -> list:
        if run.is_vq:
            return [gr.Slider(visible=False) for _ in range(LIVE_DIMS)]
        dims = ops.dims_by_kl(run)[:LIVE_DIMS]
        kl = ops.kl_per_dim(run)
        updates = []
        for i in range(LIVE_DIMS):
            if i < len(dims):
                d = int(dims[i])
                label = f"z{d}" + (f"  (KL {kl[d]:.2f} nats)" if kl is not None else "")
                updates.append(gr.Slider(label=label, visible=True, value=0.0))
            else:
                updates.append(gr.Slider(visible=False, value=0.0))
        return updates

    def _sample_note(self, run: LoadedRun) -> str:
        if run.has_prior:
            if run.is_vq:
                return "Samples: codes drawn from the run's PixelCNN prior, then decoded."
            return "Samples: z ~ N(0, T²·I) decoded. Lower temperature T: more typical, less varied images."
        return ("**This VQ-VAE has no prior to sample from.** A VQ-VAE learns a codebook, not a "
                "distribution: train a PixelCNN over its code grids with "
                "`python -m training train-prior RUN_FOLDER`, then reload the app.")

    @user_errors
    def map_view(self, name: str, color_by: str):
        """The map's points coloured by a label, the split or a latent dimension."""
        run = self.run(name)
        if run.latents is None:
            return gr.HTML(value=ui_map.message_value("No map: this run has no exported latents."))
        if not isinstance(color_by, str):
            raise UserError("colour must be a name")
        return gr.HTML(value=figures.map_payload(run, color_by))

    def overlay(self, name, point, a, b, method, steps, t, attr_point, selection, session):
        """Marks on the map for the current point, A, B, the interpolation path, the attribute input,
        your image and a selection. Decoration only: a piece that is not valid right now is left out."""
        try:
            run = self.run(name)
        except UserError:
            return ui_map.overlay_update(ui_map.empty_overlay())
        if run.latents is None:
            return ui_map.overlay_update(ui_map.empty_overlay())

        def where(p):
            try:
                return ops.place_on_map(run, self.latent_of(run, p, session))[0]
            except (UserError, gr.Error):
                return None

        marks = {"point": where(point), "input": where(attr_point), "A": where(a), "B": where(b)}
        try:
            marks["you"] = ops.place_on_map(run, self._yours(run, session)["mu"])[0]
        except UserError:
            pass
        path = None
        if marks["A"] is not None and marks["B"] is not None:
            try:
                za, zb = self.latent_of(run, a, session), self.latent_of(run, b, session)
                n = _int(steps, "steps", 2, 64)
                method = _choice(method, "method", METHODS)
                path = ops.place_on_map(run, ops.interpolate(za, zb, max(n, 12), method))
                tt = _float(t, "t", 0.0, 1.0)
                marks["t"] = ops.place_on_map(run, self._interp(za, zb, method, tt))[0]
            except UserError:
                pass
        selected = None
        rows = self._parse_rows(run, selection, strict=False)
        if rows:
            selected = run.latents["xy"][rows]
        return ui_map.overlay_update(ui_map.overlay(marks, path, selected))

    @staticmethod
    def map_clicked(evt: gr.EventData):
        """Browser map click -> the point number (the public endpoint is `point`)."""
        row = getattr(evt, "_data", {}) or {}
        r = row.get("row") if isinstance(row, dict) else None
        if isinstance(r, bool) or not isinstance(r, (int, float)) or r != int(r):
            return gr.update()
        return int(r)

    @staticmethod
    def map_selected(evt: gr.EventData):
        """Browser box/lasso selection -> the selection text box (the public endpoint is `selection`)."""
        data = getattr(evt, "_data", {}) or {}
        rows = ui_map.rows_from_event(data.get("rows") if isinstance(data, dict) else None)
        return ", ".join(str(r) for r in rows)

    @user_errors
    def show_point(self, name: str, point, session):
        """One point: its image, its reconstruction, what it is, its nearest neighbours."""
        run = self.run(name)
        p = self.point_number(run, point)
        z = self.latent_of(run, p, session)
        image = self.image_of(run, p, session)
        recon = ops.decode(run, z)[0]
        info = self._describe_point(run, p) if p != YOUR_IMAGE else "**your image** (point -1)"
        nn = ops.nearest_neighbours(run, z, NEIGHBOURS + 1)
        nn = [int(i) for i in nn if int(i) != p][:NEIGHBOURS]
        strip = _captioned_grid(ops.table_images(run, nn), [f"#{i}" for i in nn], nrow=NEIGHBOURS)
        return _show(image), _show(recon), info, strip

    def _parse_rows(self, run: LoadedRun, text: Any, strict: bool = True) -> list[int]:
        if text is None or (isinstance(text, str) and not text.strip()):
            return []
        if not isinstance(text, str):
            if strict:
                raise UserError("selection must be point numbers separated by commas")
            return []
        n = self._n_points(run)
        rows = []
        for part in text.replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            try:
                rows.append(_int(part, "selected point", 0, n - 1))
            except UserError:
                if strict:
                    raise
        if len(rows) > n:
            raise UserError("selection has more points than the table")
        return rows

    @user_errors
    def show_selection(self, name: str, selection: str):
        """A box/lasso selection: its images and the decoded mean of its latents."""
        run = self.run(name)
        rows = self._parse_rows(run, selection)
        if not rows:
            return None, None, "Nothing selected. Use the box or lasso tool (top right of the map) to select points."
        shown = rows[:MAX_SELECTION_SHOWN]
        grid = _captioned_grid(ops.table_images(run, shown), [f"#{i}" for i in shown], nrow=8)
        mean = ops.decode(run, ops.mean_latent_of_selection(run, rows))[0]
        info = f"**{len(rows)} points selected**" + (
            f" (showing the first {MAX_SELECTION_SHOWN})" if len(rows) > MAX_SELECTION_SHOWN else "")
        if run.label_names and "labels" in run.latents:
            labels = run.latents["labels"][rows]
            means = ", ".join(f"{n} {labels[:, k].mean():.3g}" for k, n in enumerate(run.label_names))
            info += f"  \nmean labels: {means}"
        info += "  \nRight: the decoded mean of their latents."
        return grid, _show(mean), info

    # ---- endpoints: reconstruction --------------------------------------------------------------------
    def _input_image(self, run: LoadedRun, source: str, point, upload, sketch):
        """The chosen input as a float tensor (1, C, H, W) in [0, 1] and a one-line description."""
        import torch

        if source == "dataset point":
            p = _int(point, "point", 0, self._n_points(run) - 1)
            thumb = ops.table_images(run, [p])[0]
            size = run.config.model.image_size
            if thumb.shape[0] == size:
                x = torch.from_numpy(thumb.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
            else:  # thumbnails are at most 64 px: bring larger models' inputs back to size
                x = ops.prepare_image(run, thumb[..., 0] if thumb.shape[2] == 1 else thumb)
            return x, f"point {p}"
        if source == "upload":
            if upload is None:
                raise UserError("upload an image first (or choose another source)")
            data = _read_upload(upload)
            return ops.prepare_image(run, data), "your upload"
        if sketch is None:
            raise UserError("draw something first (or choose another source)")
        composite = sketch.get("composite") if isinstance(sketch, dict) else sketch
        if composite is None:
            raise UserError("draw something first (or choose another source)")
        a = np.asarray(composite)
        if a.dtype != np.uint8:
            raise UserError("the drawing must be an 8-bit image")
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[:, :, :3]
        return ops.prepare_image(run, a), "your drawing"

    @user_errors
    def reconstruct(self, name: str, source: str, point, upload, sketch, noise, mask, session):
        """Input (after optional noise / mask), its reconstruction and its posterior per dimension."""
        run = self.run(name)
        source = _choice(source, "source", SOURCES)
        noise = _float(noise, "noise", 0.0, 1.0)
        mask = _choice(mask, "mask", list(MASKS))
        x, what = self._input_image(run, source, point, upload, sketch)
        m = MASKS[mask]
        if noise > 0 or m is not None:
            box = m[1] if m is not None and m[0] == "box" else None
            fraction = m[1] if m is not None and m[0] == "random" else 0.0
            x = ops.corrupt(x, noise_std=noise, mask_fraction=fraction, mask_box=box, seed=0)
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
            order = ops.dims_by_kl(run)[:32]
            posterior = figures.posterior_figure(mu[0], logvar[0], dims=order)
            info.append("Posterior per dimension (most informative first): dot = mean, bar = ±2σ, "
                        "grey band = the prior's ±2.")
        return _show(shown_input), _show(recon), posterior, "  \n".join(info), session

    # ---- endpoints: samples ---------------------------------------------------------------------------
    def _sample_grid(self, name: str, n, seed, temperature):
        run = self.run(name)
        n = _int(n, "number of samples", 1, 64)
        seed = _int(seed, "seed", 0, 2**31 - 1)
        temperature = _float(temperature, "temperature", 0.05, 3.0)
        images = ops.sample_prior(run, n, seed=seed, temperature=temperature)
        return run, _grid(images, nrow=max(1, int(math.ceil(math.sqrt(n)))))

    @user_errors
    def sample(self, name: str, n, seed, temperature):
        """A grid of prior samples (VQ-VAE: through its PixelCNN prior)."""
        return self._sample_grid(name, n, seed, temperature)[1]

    # ---- endpoints: interpolation ---------------------------------------------------------------------
    @staticmethod
    def _interp(za, zb, method: str, t: float) -> np.ndarray:
        return ops.slerp(za, zb, t) if method == "slerp" else ops.lerp(za, zb, t)

    def _ends(self, run, a, b, session):
        return self.latent_of(run, a, session, "point A"), self.latent_of(run, b, session, "point B")

    @user_errors
    def interpolate(self, name: str, a, b, method: str, steps, session):
        """A strip of frames decoded along the path from A to B (on posterior means)."""
        run = self.run(name)
        method = _choice(method, "method", METHODS)
        steps = _int(steps, "steps", 2, 64)
        za, zb = self._ends(run, a, b, session)
        frames = ops.decode(run, ops.interpolate(za, zb, steps, method))
        return _grid(frames, nrow=steps, size=max(GRID_PX, 96 * min(steps, 12)))

    @user_errors
    def interpolate_frame(self, name: str, a, b, method: str, t, session):
        """One frame at position t in [0, 1] between A and B (the live slider)."""
        run = self.run(name)
        method = _choice(method, "method", METHODS)
        t = _float(t, "t", 0.0, 1.0)
        za, zb = self._ends(run, a, b, session)
        return _show(ops.decode(run, self._interp(za, zb, method, t))[0])

    # ---- endpoints: attribute arithmetic --------------------------------------------------------------
    def _attribute(self, run: LoadedRun, attribute, corrected) -> tuple[np.ndarray, float]:
        if not run.attribute_names:
            raise UserError(f"run {run.name!r} has no attribute vectors (export it with labels)")
        if not isinstance(attribute, str) or attribute not in run.attribute_names:
            raise UserError(f"unknown attribute {str(attribute)[:60]!r} "
                            f"(this run has: {', '.join(run.attribute_names)})")
        return ops.attribute_vector(run, attribute, corrected=bool(corrected))

    def _attribute_info(self, run: LoadedRun, attribute: str, corrected: bool, auc: float) -> str:
        entry = run.attributes["attributes"][attribute]
        lines = [f"**{html.escape(attribute)}** vector = mean(μ | {html.escape(attribute)}) − mean(μ | not)"]
        if corrected:
            conf = entry.get("corrected", {}).get("confounder")
            lines.append(f"bias-corrected (balanced against *{html.escape(str(conf))}*)" if conf else "bias-corrected")
        if math.isfinite(auc):
            lines.append(f"ROC-AUC of z·v as a classifier of {html.escape(attribute)}: **{auc:.3f}** "
                         "(0.5 = no better than chance)")
        counts = [f"{k.replace('n_', '')} {entry[k]}" for k in ("n_pos", "n_neg") if k in entry]
        if counts:
            lines.append("examples: " + ", ".join(counts))
        return "  \n".join(lines)

    @user_errors
    def attribute(self, name: str, attribute, corrected, point, strength, session):
        """Input, input + strength·vector, a strip over strengths −3…+3, and the vector's ROC-AUC."""
        run = self.run(name)
        v, auc = self._attribute(run, attribute, corrected)
        strength = _float(strength, "strength", -10.0, 10.0)
        z = self.latent_of(run, point, session, "attribute input")
        edited = ops.decode(run, ops.apply_attribute(z, v, strength))[0]
        strip = ops.decode(run, np.stack([ops.apply_attribute(z, v, s) for s in STRIP_STRENGTHS]))
        return (_show(self.image_of(run, point, session)), _show(edited),
                _grid(strip, nrow=len(STRIP_STRENGTHS)), self._attribute_info(run, attribute, bool(corrected), auc))

    @user_errors
    def attribute_edit(self, name: str, attribute, corrected, point, strength, session):
        """Only the edited image (the live strength slider)."""
        run = self.run(name)
        v, _ = self._attribute(run, attribute, corrected)
        strength = _float(strength, "strength", -10.0, 10.0)
        z = self.latent_of(run, point, session, "attribute input")
        return _show(ops.decode(run, ops.apply_attribute(z, v, strength))[0])

    @user_errors
    def analogy(self, name: str, a, b, c, session):
        """A − B + C: decoded A, B, C and the result, side by side."""
        run = self.run(name)
        za = self.latent_of(run, a, session, "A")
        zb = self.latent_of(run, b, session, "B")
        zc = self.latent_of(run, c, session, "C")
        images = ops.decode(run, np.stack([za, zb, zc, ops.analogy(za, zb, zc)]))
        return _grid(images, nrow=4, size=GRID_PX)

    # ---- endpoints: disentanglement -------------------------------------------------------------------
    def _traversal_base(self, run: LoadedRun, base_run: LoadedRun, point, session) -> np.ndarray:
        """The latent to traverse from: the point itself, or (another run) its image encoded by that run."""
        if base_run is run:
            return self.latent_of(run, point, session, "traversal point")
        image = self.image_of(base_run, point, session)
        x = ops.prepare_image(run, image[..., 0] if image.shape[2] == 1 else image)
        return ops.encode_images(run, x)[0][0]

    def _traversal_grid(self, run: LoadedRun, z: np.ndarray, span: float):
        dims = ops.dims_by_kl(run)[: min(10, run.latent_dim)]
        images = ops.traversal(run, z=z, dims=dims, values=np.linspace(-span, span, TRAVERSAL_STEPS))
        kl = ops.kl_per_dim(run)
        rows = ", ".join(f"z{int(d)}" + (f" ({kl[int(d)]:.2f})" if kl is not None else "") for d in dims)
        note = (f"Rows, top to bottom: {rows} — ordered by KL (nats). Columns: the dimension set to "
                f"{-span:g} … {span:g}, the other dimensions kept at the point's posterior mean.")
        return _grid(images, nrow=TRAVERSAL_STEPS, size=GRID_PX), note

    def _scores_markdown(self, run: LoadedRun) -> str:
        metrics = run.metrics or {}
        d = metrics.get("disentanglement") if isinstance(metrics.get("disentanglement"), dict) else None
        rows = []
        if d:
            dci = d.get("dci") if isinstance(d.get("dci"), dict) else {}
            for label, value in (("MIG", d.get("mig")), ("FactorVAE score", d.get("factorvae")),
                                 ("DCI disentanglement", dci.get("disentanglement")),
                                 ("DCI completeness", dci.get("completeness")),
                                 ("DCI informativeness", dci.get("informativeness")),
                                 ("BetaVAE score", d.get("betavae"))):
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    rows.append(f"| {label} | {value:.3f} |")
        au = metrics.get("active_units")
        if isinstance(au, (int, float)) and not isinstance(au, bool):
            rows.append(f"| active units | {int(au)} of {run.latent_dim} |")
        if not rows:
            return (f"**{html.escape(run.name)}**: no disentanglement scores (they need a dataset with "
                    "ground-truth factors and `python -m training evaluate`).")
        protocol = f" — {html.escape(str(d.get('protocol')))}" if d and d.get("protocol") else ""
        return f"**{html.escape(run.name)}**{protocol}\n\n| score | value |\n|---|---|\n" + "\n".join(rows)

    def _kl_chart(self, run: LoadedRun):
        kl = ops.kl_per_dim(run)
        if kl is None or run.is_vq or not np.any(kl > 0):
            return None
        return figures.kl_bar_figure(kl)

    @user_errors
    def disentanglement(self, name: str, point, span, session):
        """Traversal grid (dims ordered by KL), KL per dimension, disentanglement scores, and the live
        sliders' starting values (the point's posterior mean on those dimensions)."""
        run = self.run(name)
        span = _float(span, "span", 0.5, 6.0)
        if run.is_vq:
            note = ("A VQ-VAE's latent is a grid of discrete codes: single-dimension traversals do not "
                    "apply. Compare a VAE-family run on the right.")
            return (None, note, None, self._scores_markdown(run), *[gr.Slider() for _ in range(LIVE_DIMS)])
        z = self.latent_of(run, point, session, "traversal point")
        grid, note = self._traversal_grid(run, z, span)
        dims = ops.dims_by_kl(run)[:LIVE_DIMS]
        sliders = [gr.Slider(value=round(float(np.clip(z[int(d)], -4, 4)), 2)) if i < len(dims) else gr.Slider()
                   for i, d in enumerate(list(dims) + [None] * (LIVE_DIMS - len(dims)))]
        return (grid, note, self._kl_chart(run), self._scores_markdown(run), *sliders)

    @user_errors
    def live_traversal(self, name: str, point, *values_and_session):
        """Decode the point with its most active dimensions set to the live sliders' values."""
        *values, session = values_and_session
        run = self.run(name)
        if run.is_vq:
            raise UserError("live dimension sliders do not apply to a VQ-VAE")
        z = self.latent_of(run, point, session, "traversal point").astype(np.float64).copy()
        dims = ops.dims_by_kl(run)[:LIVE_DIMS]
        for d, v in zip(dims, values):
            z[int(d)] = _float(v, f"value of z{int(d)}", -10.0, 10.0)
        return _show(ops.decode(run, z)[0], 256)

    @user_errors
    def compare(self, other: str, name: str, point, span, session):
        """A second run side by side: its traversal from the same image (encoded by that run), its KL
        per dimension and its scores."""
        if other in (None, "", "none"):
            return _hidden_image(), "Choose a second run to compare.", _hidden_image(), ""
        run_b = self.run(other)
        run_a = self.run(name)
        span = _float(span, "span", 0.5, 6.0)
        if run_b.is_vq:
            return (_hidden_image(), "A VQ-VAE's latent is a grid of discrete codes: no per-dimension traversal.",
                    _hidden_image(), self._scores_markdown(run_b))
        z = self._traversal_base(run_b, run_a, point, session)
        grid, note = self._traversal_grid(run_b, z, span)
        kl = self._kl_chart(run_b)
        return (gr.Image(value=grid, visible=True), note,
                gr.Image(value=kl, visible=kl is not None), self._scores_markdown(run_b))

    # ---- endpoints: downloads -------------------------------------------------------------------------
    def _download_path(self, run: LoadedRun, stem: str, ext: str) -> str:
        """A fresh file in this process's download folder (old files are pruned: nothing accumulates)."""
        with self._download_lock:
            now = time.time()
            for entry in os.scandir(self._download_dir):
                try:
                    if now - entry.stat().st_mtime > DOWNLOAD_MAX_AGE_S:
                        os.remove(entry.path)
                except OSError:
                    pass
            folder = os.path.join(self._download_dir, uuid.uuid4().hex[:12])
            os.makedirs(folder, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in run.name)[:60] or "run"
        return os.path.join(folder, f"{safe}-{stem}.{ext}")

    def _write(self, run: LoadedRun, stem: str, ext: str, data: bytes) -> str:
        path = self._download_path(run, stem, ext)
        with open(path, "wb") as f:
            f.write(data)
        return path

    @user_errors
    def download_samples(self, name: str, n, seed, temperature):
        """Sample grid as PNG."""
        run, grid = self._sample_grid(name, n, seed, temperature)
        return self._write(run, f"samples-seed{int(seed)}", "png", figures.to_png_bytes(grid))

    @user_errors
    def download_traversal(self, name: str, point, span, session):
        """Traversal grid as PNG."""
        run = self.run(name)
        if run.is_vq:
            raise UserError("a VQ-VAE has no per-dimension traversal")
        span = _float(span, "span", 0.5, 6.0)
        grid, _ = self._traversal_grid(run, self.latent_of(run, point, session, "traversal point"), span)
        return self._write(run, "traversal", "png", figures.to_png_bytes(grid))

    @user_errors
    def download_gif(self, name: str, a, b, method: str, steps, session):
        """Interpolation A → B (and back) as an animated GIF."""
        run = self.run(name)
        method = _choice(method, "method", METHODS)
        steps = _int(steps, "steps", 2, 64)
        za, zb = self._ends(run, a, b, session)
        frames = ops.decode(run, ops.interpolate(za, zb, steps, method))
        data = figures.make_gif(frames, fps=8, pingpong=True, size=256)
        return self._write(run, f"interpolation-{method}", "gif", data)

    @user_errors
    def download_latents(self, name: str):
        """Latent table with map coordinates and labels as CSV."""
        run = self.run(name)
        return self._write(run, "latents", "csv", figures.latents_csv(run))

    @user_errors
    def download_attributes(self, name: str):
        """Attribute vectors (attributes.json)."""
        run = self.run(name)
        return self._write(run, "attributes", "json", figures.attributes_json(run))


# ---- uploads ------------------------------------------------------------------------------------------
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def _read_upload(upload: Any) -> bytes:
    """The uploaded file's bytes (the upload component gives a path in Gradio's upload cache)."""
    path = upload.get("path") if isinstance(upload, dict) else upload
    if not isinstance(path, (str, os.PathLike)):
        raise UserError("the upload is not a file")
    try:
        size = os.path.getsize(path)
        if size > MAX_UPLOAD_BYTES:
            raise UserError(f"the upload is too large ({size / 1e6:.1f} MB; limit {MAX_UPLOAD_BYTES / 1e6:g} MB)")
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise UserError("the upload could not be read")
