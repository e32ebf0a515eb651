"""Shared pieces of the app tests and the app benchmark: a tiny real run, a free port, a running app."""
from __future__ import annotations

import contextlib
import os
import socket
import time

from training.config import DataConfig, RunConfig, TrainConfig, model_config


def tiny_run_config(model: str = "vae", steps: int = 50, image_size: int = 32, latent_dim: int = 6) -> RunConfig:
    """Smileys (RGB faces with labels, smile/glasses correlated so that attribute vectors have a bias-corrected
    version) at 32 px, a two-stage conv net, a few steps on the CPU."""
    model_cfg = model_config(name=model, image_size=image_size, channels=3, latent_dim=latent_dim, hidden=[16, 32],
                            fc_dim=64, likelihood="gaussian", gaussian_std=0.1)
    if model == "vqvae":
        model_cfg.num_codes, model_cfg.code_dim = 16, 4
    data = DataConfig(name="smileys", image_size=image_size,
                      options={"correlate": ["smile", "glasses"], "correlation": 0.8})
    train = TrainConfig(steps=steps, batch_size=32, lr=2e-3, log_every=25, sample_every=steps,
                        checkpoint_every=steps, grid_n=16, device="cpu", amp=False, seed=1)
    return RunConfig(data=data, model=model_cfg, train=train)


def build_tiny_run(out_dir: str, model: str = "vae", steps: int = 50, n_export: int = 400,
                   evaluate: bool = False) -> str:
    """Train (training.trainer.train) and export (training.export.export_run) a tiny run into out_dir."""
    from training.export import export_run
    from training.trainer import train

    train(tiny_run_config(model, steps), out_dir, progress=False)
    if evaluate:
        from training.evaluate import evaluate_run

        evaluate_run(out_dir, k=0, n_test=100, disentanglement=False)
    export_run(out_dir, n=n_export, umap_neighbors=10)
    return out_dir


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run torch on n threads for a while. On a busy 2-core machine one thread is several times faster for
    these tiny models (measured: 60 training steps took 2.4 s of CPU on 1 thread, 14.7 s on 2), and it is
    what app.py uses when serving."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_app(process, timeout: float = 20.0) -> None:
    """Terminate a started app process; kill it if it has not exited after `timeout` seconds."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_for_http(url: str, timeout: float = 60.0) -> float:
    """Seconds until `url` answers 200 (raises TimeoutError)."""
    import urllib.request

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


_tiny_runs: dict = {}


def tiny_runs_root() -> str:
    """A folder with tiny real runs, built once per test process and shared by the app tests: `vae`
    (trained, evaluated, exported), `vae-not-exported` (the same without latents.npz / attributes.json),
    `vq` (a VQ-VAE without a prior) and `vq-prior` (the same with a tiny PixelCNN prior). Removed when the
    process exits."""
    if "root" in _tiny_runs:
        return _tiny_runs["root"]
    import atexit
    import shutil
    import tempfile

    import training.export
    from training.prior import train_prior

    root = tempfile.mkdtemp(prefix="vae-explorer-app-runs-")
    atexit.register(shutil.rmtree, root, True)
    # The exported 2-D map is fitted by PCA instead of UMAP here: UMAP's first fit JIT-compiles for 20-50 s
    # on 2 cores, and the app treats `xy` the same whichever way it was made (it never fits anything).
    fit_map = training.export.fit_map
    training.export.fit_map = lambda mu, *args, **kwargs: training.latent_map.pca_2d(mu)
    try:
        with torch_threads(1):
            build_tiny_run(os.path.join(root, "vae"), "vae", steps=150, n_export=300, evaluate=True)
            build_tiny_run(os.path.join(root, "vq"), "vqvae", steps=20, n_export=200)
            shutil.copytree(os.path.join(root, "vq"), os.path.join(root, "vq-prior"))
            train_prior(os.path.join(root, "vq-prior"), steps=10, layers=2, channels=8, n_train=300, n_test=50,
                        device="cpu", progress=False)
    finally:
        training.export.fit_map = fit_map
    # A trained run that was never exported: the app must show it and say what is missing.
    shutil.copytree(os.path.join(root, "vae"), os.path.join(root, "vae-not-exported"),
                    ignore=shutil.ignore_patterns("latents.npz", "attributes.json"))
    _tiny_runs["root"] = root
    return root


def wait_quiet(page, quiet_s: float = 2.0, timeout: float = 120.0, requests: list | None = None) -> None:
    """Until the page has sent nothing to the app (no /gradio_api/ request) for quiet_s and no output is pending
    (its first views in); gives up silently after `timeout` seconds. Playwright's "networkidle" never comes in a
    Gradio page: the queue's event stream and heartbeat stay open.

    requests: a list the caller's page.on("request") handler already fills (URLs, or tuples whose first item
    is the URL); the quiet period is measured over it. Without it, the requests sent from now on are recorded."""
    if requests is None:
        requests = []
        page.on("request", lambda r: requests.append(r.url))

    def sent() -> int:
        return sum("/gradio_api/" in (r if isinstance(r, str) else r[0]) for r in requests)

    def pending() -> int:
        return page.evaluate("document.querySelectorAll('.wrap.pending, .wrap.generating').length")

    start = since = time.time()
    count = sent()
    while time.time() - start < timeout:
        page.wait_for_timeout(100)   # Playwright delivers the page's events (its requests) while it waits
        if sent() != count or pending():
            count, since = sent(), time.time()
        elif time.time() - since >= quiet_s:
            return
