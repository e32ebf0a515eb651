"""Files the app hands to Gradio: shown images and downloads, each under a fresh name in a private
temporary folder whose old files are pruned, so nothing accumulates on a long-running server."""
from __future__ import annotations

import atexit
import io
import itertools
import os
import shutil
import tempfile
import threading
import time
import uuid

from PIL import Image

IMAGE_MAX_AGE_S = 600.0
DOWNLOAD_MAX_AGE_S = 600.0  # Gradio serves its own copy, pruned after 10 min too (limits.CACHE_PRUNE)


class TempFolder:
    """A private temporary folder whose files older than `max_age_s` are removed by `prune()`."""

    def __init__(self, prefix: str, max_age_s: float):
        self.path = tempfile.mkdtemp(prefix=prefix)
        self.max_age_s = max_age_s
        # The folder goes with the process: nothing in it is needed by the next one.
        atexit.register(shutil.rmtree, self.path, True)

    def prune(self) -> None:
        now = time.time()
        for entry in os.scandir(self.path):
            try:
                if now - entry.stat().st_mtime > self.max_age_s:
                    if entry.is_dir(follow_symlinks=False):
                        for inner in os.scandir(entry.path):
                            os.remove(inner.path)
                        os.rmdir(entry.path)
                    else:
                        os.remove(entry.path)
            except OSError:
                pass


class ImageFiles:
    """Shown images leave as PNG files under unique names.

    Given a PIL image, Gradio writes it into its cache under a name made from its content, in place: when
    two users decode the same frame at the same moment (a class following the teacher's slider), one
    request rewrites the file while the other's browser is reading it and gets a truncated image. A file
    path is copied into the cache atomically instead.
    """

    def __init__(self, max_age_s: float = IMAGE_MAX_AGE_S, prune_every: int = 500):
        self.folder = TempFolder("vae-explorer-images-", max_age_s)
        self.prune_every = prune_every
        self._written = itertools.count(1)

    def write(self, image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        path = os.path.join(self.folder.path, f"{uuid.uuid4().hex[:16]}.png")
        with open(path, "wb") as f:
            f.write(buffer.getvalue())
        # Gradio has its own copy by the time a file is old: ours can go.
        if next(self._written) % self.prune_every == 0:
            self.folder.prune()
        return path

    def replace_images(self, result):
        """A handler's result with every PIL image (alone, in a tuple, or as the value of a gr.update)
        replaced by a file path."""
        if isinstance(result, tuple):
            return tuple(self._replace_one(r) for r in result)
        return self._replace_one(result)

    def _replace_one(self, value):
        if isinstance(value, Image.Image):
            return self.write(value)
        if isinstance(value, dict) and isinstance(value.get("value"), Image.Image):
            return {**value, "value": self.write(value["value"])}
        return value


class Downloads:
    """Download files, each in its own subfolder so that its name can be the readable `<run>-<what>.<ext>`."""

    def __init__(self, max_age_s: float = DOWNLOAD_MAX_AGE_S):
        self.folder = TempFolder("vae-explorer-downloads-", max_age_s)
        self._lock = threading.Lock()

    def write(self, run_name: str, stem: str, ext: str, data: bytes) -> str:
        with self._lock:
            self.folder.prune()
            subfolder = os.path.join(self.folder.path, uuid.uuid4().hex[:12])
            os.makedirs(subfolder, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in run_name)[:60] or "run"
        path = os.path.join(subfolder, f"{safe}-{stem}.{ext}")
        with open(path, "wb") as f:
            f.write(data)
        return path


image_files = ImageFiles()
