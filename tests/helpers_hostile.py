"""Pieces of the hostile-input tests: tiny real runs and their broken copies, hostile files built cheaply,
the app started as a subprocess (as `python app.py` runs it), and a snapshot of what must not change."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- runs -------------------------------------------------------------------------------------------------
def build_good_run(out_dir: str) -> str:
    """A tiny real VAE run (smileys 32 px), trained and exported; the 2-D map is fitted by PCA, not UMAP (the
    app only reads `xy`, and UMAP's first fit JIT-compiles for tens of seconds)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import training.export
    from helpers_app import build_tiny_run, torch_threads

    fit_map = training.export.fit_map
    training.export.fit_map = lambda mu, *args, **kwargs: training.latent_map.pca_2d(mu)
    try:
        with torch_threads(1):
            build_tiny_run(out_dir, "vae", steps=30, n_export=200)
    finally:
        training.export.fit_map = fit_map
    return out_dir


class MarkerWriter:
    """Unpickling this object calls open(marker, "w"): the marker file appears iff a pickle was executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import builtins
        return (builtins.open, (self.marker, "w"))


def malicious_torch_checkpoint(path: str, marker: str) -> None:
    """A torch.save zip whose pickle would create `marker` when loaded without weights_only."""
    import torch

    payload = {"step": 1, "model": {}, "optimizer": {}, "config": {}, "rng": {}, "evil": MarkerWriter(marker)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def malicious_plain_pickle(path: str, marker: str) -> None:
    with open(path, "wb") as f:
        pickle.dump({"state": MarkerWriter(marker)}, f)


def make_broken_runs(good: str, root: str, marker: str) -> dict:
    """Broken copies of `good` under `root`; returns name -> path."""
    def copy(name: str) -> str:
        path = os.path.join(root, name)
        shutil.copytree(good, path)
        return path

    runs = {}
    runs["truncated-weights"] = p = copy("truncated-weights")
    w = os.path.join(p, "model.safetensors")
    with open(w, "r+b") as f:
        f.truncate(os.path.getsize(w) // 2)
    runs["future-format"] = p = copy("future-format")
    cfg = os.path.join(p, "config.json")
    with open(cfg, encoding="utf-8") as f:
        d = json.load(f)
    d["format_version"] = 99
    with open(cfg, "w", encoding="utf-8") as f:
        json.dump(d, f)
    runs["garbage-latents"] = p = copy("garbage-latents")
    with open(os.path.join(p, "latents.npz"), "wb") as f:
        f.write(os.urandom(4096))
    runs["pickled-weights"] = p = copy("pickled-weights")
    malicious_plain_pickle(os.path.join(p, "model.safetensors"), marker)
    runs["pickled-checkpoint"] = p = copy("pickled-checkpoint")
    malicious_torch_checkpoint(os.path.join(p, "checkpoint.pt"), marker)
    runs["plain-pickle-checkpoint"] = p = copy("plain-pickle-checkpoint")
    malicious_plain_pickle(os.path.join(p, "checkpoint.pt"), marker)
    return runs


# ---- hostile pictures, built without allocating their pixels ------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path: str, width: int, height: int) -> str:
    """A PNG whose header claims width x height (8-bit grey) with a tiny, valid-looking IDAT: a decompression
    bomb as far as a decoder that trusts the header is concerned, 100 bytes on disk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def png_zeros(path: str, width: int, height: int) -> str:
    """A real, fully decodable grey PNG of width x height, all black, written row by row from one compressed
    stream (an 8000 x 8000 image is ~60 kB on disk and never held in memory here)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
                + _chunk(b"IEND", b""))
    return path


def odd_mode_images(folder: str) -> dict:
    """Small images in modes a decoder must convert: CMYK JPEG, 16-bit grey PNG, palette PNG, animated GIF,
    RGBA PNG, 1x1 PNG, 1-bit PNG, LA PNG, float TIFF."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), "RGB")
    files = {}

    def save(name, image, **kw):
        path = os.path.join(folder, name)
        image.save(path, **kw)
        files[name] = path

    save("cmyk.jpg", rgb.convert("CMYK"), format="JPEG")
    save("grey16.png", Image.fromarray(rng.integers(0, 65535, (40, 40)).astype(np.uint16)))
    save("palette.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
    frames = [Image.fromarray(np.full((30, 30, 3), v, np.uint8)) for v in (0, 128, 255)]
    path = os.path.join(folder, "animated.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)
    files["animated.gif"] = path
    save("rgba.png", Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8), "RGBA"))
    save("one-pixel.png", Image.new("RGB", (1, 1), (200, 10, 10)))
    save("bilevel.png", rgb.convert("1"))
    save("grey-alpha.png", rgb.convert("LA"))
    save("float.tiff", Image.fromarray(rng.random((24, 24)).astype(np.float32), "F"))
    return files


# ---- the app as a subprocess ----------------------------------------------------------------------------------
def start_app(runs_root: str, port: int, sandbox: str) -> subprocess.Popen:
    """`python app.py --runs ROOT` with its temp files (Gradio's cache included) and working directory in
    `sandbox`, one torch thread, output to sandbox/app.log."""
    tmp = os.path.join(sandbox, "tmp")
    os.makedirs(tmp, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TMPDIR=tmp, GRADIO_TEMP_DIR=os.path.join(tmp, "gradio"),
               VAE_EXPLORER_THREADS="1", OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1")
    cwd = os.path.join(sandbox, "cwd")
    os.makedirs(cwd, exist_ok=True)
    log = open(os.path.join(sandbox, "app.log"), "w")
    return subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "app.py"), "--runs", runs_root,
                             "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


# ---- snapshots ----------------------------------------------------------------------------------------------
def tree_snapshot(root: str) -> dict:
    """path -> (size, mtime_ns) of every file under root."""
    snapshot = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            snapshot[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return snapshot


def snapshot_diff(before: dict, after: dict) -> list:
    changed = [p for p in after if p not in before or before[p] != after[p]]
    removed = [p for p in before if p not in after]
    return sorted(changed + removed)
