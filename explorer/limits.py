"""What an anonymous visitor may spend: request bodies, uploads, drawings, sessions and log lines.

The app runs on a small public server where anyone can send anything, so every resource a request can
hold after it has been answered is bounded here, before Gradio spends memory or disk on it:
  * `RequestLimits`, an ASGI middleware in front of Gradio's routes: every POST states its length; a
    component-server call (the drawing's blobs) is at most 1 MB; uploads count against a quota per
    client and one for the whole server over the time Gradio keeps them (`CACHE_PRUNE`);
  * `guard_sketchpad`: the drawing's blobs are checked (kind, layer index, size, image header) before
    they are kept, at most `MAX_BLOB_IDS` drawings are kept at once, and a drawing's pictures are
    checked on their headers before Gradio decodes them;
  * sessions: at most `MAX_SESSIONS`, and one idle for `SESSION_IDLE_S` is dropped (`launch_options`);
    `small_sessions` keeps a session to its gr.State values and changed components, without Gradio's
    copy of every output it was sent (kept only for deep links, which this app does not offer: their
    route, which writes that copy to disk on any GET, is refused);
  * `quiet_refusals`: a request Gradio itself refuses (a value its component cannot take) logs one
    line instead of a traceback.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import io
import logging
import os
import sys
import threading
import time
import traceback as _traceback
from typing import Any

import gradio as gr
import gradio.queueing
import gradio.routes
import gradio.utils
from gradio.state_holder import SessionState
from fastapi import HTTPException
from gradio.components.base import server
from gradio.exceptions import ComponentProcessingError
from PIL import Image
from pydantic import ValidationError
from starlette.middleware import Middleware

log = logging.getLogger("explorer.limits")

COMPONENT_SERVER_MAX_BYTES = 1024 * 1024     # one drawing blob: a 256 px canvas is a few kB of PNG
REQUEST_MAX_BYTES = 16 * 1024 * 1024         # any other POST: an upload (10 MB) with room for its form
CACHE_PRUNE = (60, 600)                      # Gradio's cache: every 60 s, delete files older than 10 min
UPLOAD_WINDOW_S = CACHE_PRUNE[0] + CACHE_PRUNE[1]
UPLOAD_BYTES_PER_CLIENT = 50 * 1024 * 1024   # per client within the window (five 10 MB pictures)
UPLOAD_BYTES_TOTAL = 300 * 1024 * 1024       # all clients within the window: the disk the uploads may hold
MAX_SESSIONS = 300
SESSION_IDLE_S = 1800.0
MAX_BLOB_IDS = 64                            # drawings sent but not yet used, all sessions together
MAX_BLOB_BYTES = 32 * 1024 * 1024            # their blobs, all together
MAX_LAYERS = 4
MAX_DRAWING_PIXELS = 4_000_000               # each picture of a drawing (the canvas is 256 x 256)
MAX_DRAWING_BYTES = COMPONENT_SERVER_MAX_BYTES


def refuse(status: int, why: str, request_path: str = "") -> HTTPException:
    log.warning("refused %s: %s", request_path or "request", why)
    return HTTPException(status_code=status, detail=why)


# ---- request bodies and uploads ------------------------------------------------------------------------------
class UploadQuota:
    """Bytes uploaded per client and in total over a sliding window; `take` refuses what would exceed either."""

    def __init__(self, window_s: float = UPLOAD_WINDOW_S, per_client: int = UPLOAD_BYTES_PER_CLIENT,
                 total: int = UPLOAD_BYTES_TOTAL):
        self.window_s, self.per_client, self.total = window_s, per_client, total
        self.events: collections.deque = collections.deque()   # (time, client, bytes)
        self.by_client: dict = collections.defaultdict(int)
        self.sum = 0
        self.lock = threading.Lock()

    def take(self, client: str, size: int, now: float | None = None) -> str | None:
        """None when `size` more bytes from `client` fit; otherwise why not."""
        now = time.monotonic() if now is None else now
        with self.lock:
            while self.events and now - self.events[0][0] > self.window_s:
                _, old_client, old_size = self.events.popleft()
                self.sum -= old_size
                self.by_client[old_client] -= old_size
                if self.by_client[old_client] <= 0:
                    del self.by_client[old_client]
            if self.by_client.get(client, 0) + size > self.per_client:
                return f"upload quota of this client used up ({self.per_client // 2**20} MB per {self.window_s / 60:g} min)"
            if self.sum + size > self.total:
                return "the server's upload space is full; try again in a few minutes"
            self.events.append((now, client, size))
            self.sum += size
            self.by_client[client] += size
            return None


def client_of(scope: dict, headers: dict) -> str:
    """The client's address as the proxy in front of the app reports it (a Space's), else the socket's."""
    forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1").split(",")[0].strip()
    if forwarded:
        return forwarded
    return (scope.get("client") or ("?", 0))[0]


class RequestLimits:
    """ASGI middleware: a POST must state its length (no chunked bodies), within the route's limit; uploads
    count against `UploadQuota`. A refusal is answered before the body is read and logs one line."""

    def __init__(self, app, quota: UploadQuota | None = None):
        self.app = app
        self.quota = quota or UploadQuota()

    async def __call__(self, scope, receive, send):
        why = None
        if scope["type"] == "http" and scope.get("path", "").rstrip("/").endswith("/deep_link"):
            why = 404, "this app has no deep links"
        elif scope["type"] == "http" and scope.get("method") == "POST":
            why = self.check(scope)
        if why is not None:
            status, text = why
            log.warning("refused %s %s: %s", scope.get("method"), scope.get("path", "")[:100], text)
            body = text.encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def check(self, scope: dict) -> tuple[int, str] | None:
        headers = dict(scope.get("headers") or [])
        path = scope.get("path", "").rstrip("/")
        length = headers.get(b"content-length")
        if length is None:
            if b"transfer-encoding" in headers:
                return 411, "a request body must state its length"
            return None
        try:
            size = int(length)
        except ValueError:
            return 400, "bad Content-Length"
        limit = COMPONENT_SERVER_MAX_BYTES if path.endswith("/component_server") else REQUEST_MAX_BYTES
        if size > limit:
            return 413, f"request body too large ({size} bytes; limit {limit})"
        if path.endswith("/upload"):
            why = self.quota.take(client_of(scope, headers), size)
            if why is not None:
                return 429, why
        return None


# ---- the drawing (Sketchpad) ------------------------------------------------------------------------------------
def _picture_size(data: Any) -> tuple[int, int]:
    """(width, height) of a drawing's picture (bytes or a FileData path) from its header, nothing decoded."""
    path = getattr(data, "path", None)
    try:
        if path is not None:
            with Image.open(path) as im:
                return im.size
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError:
        raise gr.Error("the drawing is too large", print_exception=False)
    except Exception:
        raise gr.Error("the drawing is not an image", print_exception=False)


def check_drawing_picture(data: Any) -> None:
    if data is None:
        return
    size = getattr(data, "size", None) if getattr(data, "path", None) else len(data)
    if size is not None and size > MAX_DRAWING_BYTES:
        raise gr.Error(f"the drawing is too large ({size} bytes)", print_exception=False)
    w, h = _picture_size(data)
    if w * h > MAX_DRAWING_PIXELS:
        raise gr.Error(f"the drawing is too large ({w}×{h}; at most {MAX_DRAWING_PIXELS / 1e6:g} megapixels)",
                       print_exception=False)


def stored_bytes(blobs: dict) -> int:
    return sum(len(part or b"") for entry in blobs.values()
               for part in (entry.background, entry.composite, *entry.layers))


def guard_sketchpad(sketch: gr.Sketchpad) -> gr.Sketchpad:
    """Bound what the drawing component keeps and decodes.

    Gradio keeps each blob the page sends (`accept_blobs`) in a dict on the component until the drawing is
    used, extends the layer list to whatever index a request names, and decodes every layer of a drawing
    before the handler sees it. Here a blob is checked first (its kind, a layer index below `MAX_LAYERS`,
    at most 1 MB, an image header within `MAX_DRAWING_PIXELS`), at most `MAX_BLOB_IDS` unused drawings are
    kept (the oldest go first), and a drawing with more layers or larger pictures is refused before
    decoding."""
    blobs: collections.OrderedDict = collections.OrderedDict()
    sketch.blob_storage = blobs
    lock = threading.Lock()
    accept, preprocess = sketch.accept_blobs, sketch.preprocess

    @server
    def accept_blobs(data):
        try:
            fields = data.data
            kind, index, file = fields["type"], fields["index"], data.files[0][1]
        except Exception:
            raise refuse(400, "malformed drawing blob", "accept_blobs")
        if kind not in ("background", "layer", "composite") or len(data.files) != 1:
            raise refuse(400, f"unknown drawing part {str(kind)[:20]!r}", "accept_blobs")
        if kind == "layer":
            try:
                if not 0 <= int(index) < MAX_LAYERS:
                    raise ValueError
            except (TypeError, ValueError):
                raise refuse(400, f"layer index out of range: {str(index)[:20]!r}", "accept_blobs")
        try:
            check_drawing_picture(file)
        except gr.Error as e:
            raise refuse(413, e.message, "accept_blobs")
        with lock:
            accept(data)
            blobs.move_to_end(fields["id"])
            while len(blobs) > MAX_BLOB_IDS or (len(blobs) > 1 and stored_bytes(blobs) > MAX_BLOB_BYTES):
                blobs.popitem(last=False)

    def guarded_preprocess(payload):
        if payload is not None:
            parts = blobs.get(payload.id) if payload.id is not None else payload
            if parts is not None:
                layers = list(parts.layers or [])
                if len(layers) > MAX_LAYERS:
                    blobs.pop(payload.id, None) if payload.id is not None else None
                    raise gr.Error(f"the drawing has {len(layers)} layers (at most {MAX_LAYERS})",
                                   print_exception=False)
                for picture in [parts.background, parts.composite, *layers]:
                    check_drawing_picture(picture)
        return preprocess(payload)

    sketch.accept_blobs = accept_blobs
    sketch.preprocess = guarded_preprocess
    return sketch


# ---- sessions ------------------------------------------------------------------------------------------------------
def drop_idle_sessions(state_holder, idle_s: float = SESSION_IDLE_S) -> int:
    """Remove the sessions not used for `idle_s` seconds (their gr.State values through delete_state first);
    returns how many went."""
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=idle_s)
    idle = [sid for sid, used in list(state_holder.time_last_used.items()) if used < cutoff]
    for sid in idle:
        with contextlib.suppress(Exception):  # a session another request is ending at the same moment
            state_holder.delete_state(sid)
        with state_holder.lock:
            state_holder.session_data.pop(sid, None)
            state_holder.time_last_used.pop(sid, None)
    return len(idle)


@contextlib.asynccontextmanager
async def session_reaper(app, every_s: float = 60.0):
    """Lifespan of the server app: drops idle sessions every minute."""
    async def loop():
        while True:
            await asyncio.sleep(every_s)
            dropped = drop_idle_sessions(app.state_holder)
            if dropped:
                log.info("dropped %d idle sessions", dropped)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()


def launch_options() -> dict:
    """The limits as arguments of demo.launch(); sessions become small for the whole process."""
    small_sessions()
    return dict(state_session_capacity=MAX_SESSIONS,
                app_kwargs={"middleware": [Middleware(RequestLimits)], "lifespan": session_reaper})


class _NoCopies(dict):
    """A dict that keeps nothing: the per-session copies of component configs Gradio writes into it."""

    def __setitem__(self, key, value) -> None:
        pass


def _small_session_init(self, blocks) -> None:
    """SessionState.__init__ (the same attributes) without building the copies."""
    self.blocks_config = copy.copy(blocks.default_config)
    self.config_values = _NoCopies()
    self.state_data = {}
    self._state_ttl = {}
    self.is_closed = False
    # How long a closed session's gr.State values stay, as Gradio sets it (short under its own e2e tests).
    self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600


GRADIO_SESSION_INIT = SessionState.__init__


def small_sessions() -> None:
    """Sessions without Gradio's copy of every component's config and last output value (about 1 MB a
    session here: the map's payload, the live views' latents), which serves only deep links."""
    SessionState.__init__ = _small_session_init
    SessionState._update_value_in_config = lambda self, key, value: None
    SessionState._update_config = lambda self, key: None


# ---- one line per refused request ---------------------------------------------------------------------------------
class _QuietTraceback:
    """Stands in for the `traceback` module inside Gradio's request handling: an error that is a refused
    request (a value a component cannot take, a malformed payload) prints one line; anything else, a bug,
    prints its traceback as before."""

    def __getattr__(self, name: str):
        return getattr(_traceback, name)

    @staticmethod
    def print_exc(*args, **kwargs) -> None:
        error = sys.exc_info()[1]
        if is_refusal(error):
            text = " ".join(str(error).split())
            if "Original error:" in text:
                text = text.split("(a `", 1)[-1].split("`", 1)[0] + ": " + text.split("Original error:", 1)[1].strip()
            print(f"refused request: {type(error).__name__}: {text[:300]}", file=sys.stderr, flush=True)
            return
        _traceback.print_exc(*args, **kwargs)


def is_refusal(error: BaseException | None) -> bool:
    if isinstance(error, ComponentProcessingError):
        return "Could not postprocess" not in str(error)  # an output the app itself made is a bug
    return isinstance(error, (gr.Error, ValidationError, HTTPException))


def quiet_refusals() -> None:
    """Make Gradio print one line, not a traceback, for each request it refuses."""
    for module in (gradio.queueing, gradio.routes, gradio.utils):
        module.traceback = _QuietTraceback()
