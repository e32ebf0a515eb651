"""How fast the explorer answers: cold start, per-request latency over HTTP, map payload size.

    python benchmarks/app_latency.py                 # builds a dSprites-sized run with 10,000 exported points
    python benchmarks/app_latency.py --runs assets   # or measures existing runs (the first one listed)
    python benchmarks/app_latency.py --umap          # export the map with UMAP instead of PCA (slower build)

Starts `python app.py --runs DIR` as a subprocess, measures the time until the page answers, then drives the
named endpoints over HTTP: p50 / p95 of a live slider decode (interpolation frame) and a map click (the
`point` endpoint a click triggers), both as the page sends them (a direct POST on a kept-alive connection:
these endpoints skip the queue) and through gradio_client (which adds its own queue protocol and downloads
the image); a reconstruction and a sample grid through gradio_client; the slider decode with 8 clients at
once (8 users dragging sliders at the same time, each on its own connection); and the size of the map
payload. Prints one JSON object.

Targets on 2 CPU cores: slider decode p95 <= 120 ms, cold start <= 10 s, map payload <= 2 MB (10,000 points).
The built run uses the dSprites architecture of Burgess et al. (64x64, four stride-2 convs, 10 latents):
decode cost depends on the model, not on how long it trained, so 20 training steps are enough here.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

TARGETS = {"slider_decode_p95_ms": 120.0, "cold_start_s": 10.0, "map_payload_mb": 2.0}


def build_benchmark_run(root: str, n_points: int, use_umap: bool) -> str:
    """A dSprites run of the published architecture, 20 steps, exported with n_points points."""
    import torch

    import training.export
    from training.config import DataConfig, RunConfig, TrainConfig, model_config
    from training.export import export_run
    from training.trainer import train

    out = os.path.join(root, "dsprites-vae")
    cfg = RunConfig(data=DataConfig(name="dsprites"), model=model_config(name="beta-vae", beta=4.0),
                    train=TrainConfig(steps=20, batch_size=64, device="cpu", amp=False, log_every=10,
                                      sample_every=20, checkpoint_every=20, grid_n=16))
    torch.set_num_threads(1)  # much faster than 2 on a busy 2-core machine for a model this small
    train(cfg, out, progress=False)
    if not use_umap:  # PCA map: same payload shape, no 30-60 s of UMAP JIT on a small machine
        training.export.fit_map = lambda mu, *args, **kwargs: training.latent_map.pca_2d(mu)
    export_run(out, n=n_points)
    return root


def percentiles(samples_s: list) -> dict:
    ms = sorted(1000.0 * s for s in samples_s)

    def pct(p):
        return ms[min(len(ms) - 1, max(0, int(round(p / 100.0 * (len(ms) - 1)))))]

    return {"n": len(ms), "p50_ms": round(pct(50), 1), "p95_ms": round(pct(95), 1),
            "mean_ms": round(statistics.fmean(ms), 1), "max_ms": round(ms[-1], 1)}


def timed(fn, n: int, warmup: int = 2) -> dict:
    for i in range(warmup):
        fn(i)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def concurrent(url: str, call, clients: int, per_client: int) -> dict:
    """`clients` users at once, each on its own kept-alive connection: call(http, i) makes one request."""
    import httpx

    samples, errors = [], []
    lock = threading.Lock()

    def work(k: int):
        with httpx.Client() as http:
            for i in range(per_client):
                start = time.perf_counter()
                try:
                    call(http, i + 100 * k)
                except Exception as e:  # counted, not fatal: the benchmark reports them
                    with lock:
                        errors.append(str(e)[:120])
                    continue
                with lock:
                    samples.append(time.perf_counter() - start)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = percentiles(samples) if samples else {}
    out.update(clients=clients, wall_s=round(time.perf_counter() - start, 2), errors=len(errors),
               error_examples=sorted(set(errors))[:3])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=None, help="measure these runs instead of building one")
    p.add_argument("--points", type=int, default=10_000, help="points to export in the built run")
    p.add_argument("--umap", action="store_true", help="fit the built run's map with UMAP (as export does)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--n", type=int, default=40, help="requests per measured endpoint")
    args = p.parse_args(argv)

    from helpers_app import free_port, stop_app, wait_for_http

    tmp = None
    if args.runs:
        runs = os.path.abspath(args.runs)
    else:
        tmp = tempfile.mkdtemp(prefix="vae-explorer-bench-")
        t = time.perf_counter()
        runs = build_benchmark_run(tmp, args.points, args.umap)
        print(f"built a benchmark run in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, os.path.join(REPO, "app.py"), "--runs", runs, "--port", str(port)],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_http(url, timeout=120)
        cold_start = time.perf_counter() - start
        result = measure(url, args.n)
        result["cold_start_s"] = round(cold_start, 2)
    finally:
        stop_app(server)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    result["cpu_cores"] = os.cpu_count()
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    result["targets"] = TARGETS
    result["meets_targets"] = {
        "slider_decode_p95": result["slider_decode_http"]["p95_ms"] <= TARGETS["slider_decode_p95_ms"],
        "cold_start": result["cold_start_s"] <= TARGETS["cold_start_s"],
        "map_payload": result["map_payload"]["mb"] <= TARGETS["map_payload_mb"],
    }
    print(json.dumps(result, indent=2))
    return 0


def direct_post(http, url: str, api_name: str, data: list) -> None:
    """One call of a live (not queued) endpoint through Gradio's plain HTTP API, on a kept-alive connection:
    what the page does while a slider is dragged, without gradio_client's own work. `data` holds every
    input of the event, the session state as None (a fresh session)."""
    r = http.post(f"{url}gradio_api/run/{api_name}", json={"data": data}, timeout=60)
    r.raise_for_status()


def measure(url: str, n: int) -> dict:
    import httpx
    from gradio_client import Client

    client = Client(url, verbose=False)
    light = Client(url, verbose=False, download_files=False)  # gets the image's URL, does not fetch it
    run = client_runs(client)[0]
    t = time.perf_counter()
    select = client.predict(run, api_name="/select_run")
    first_select_s = time.perf_counter() - t
    payload = select[1]["value"]   # as the page receives it (its arrays packed)
    n_points = payload.get("n", 0)
    payload_bytes = len(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    m = max(1, min(n_points, 1000))

    def frame(c):
        return lambda i: c.predict(run, 0, 1, "slerp", (i % 50) / 50.0, api_name="/interpolate_frame")

    out = {"run": run, "points": n_points, "first_select_run_s": round(first_select_s, 2)}
    out["map_payload"] = {"points": n_points, "bytes": payload_bytes, "mb": round(payload_bytes / 1e6, 3)}
    out["slider_decode_client"] = timed(frame(client), n)
    out["slider_decode_client_no_download"] = timed(frame(light), n)
    with httpx.Client() as http:
        out["slider_decode_http"] = timed(
            lambda i: direct_post(http, url, "interpolate_frame", [run, 0, 1, "slerp", (i % 50) / 50.0, None]), n)
        out["map_click_http"] = timed(lambda i: direct_post(http, url, "point", [run, (37 * i) % m, None]), n)
    out["map_click_client"] = timed(lambda i: client.predict(run, (37 * i) % m, api_name="/point"), n)
    out["reconstruction"] = timed(lambda i: client.predict(run, "dataset point", (11 * i) % m, None, None, 0.1,
                                                           "none", api_name="/reconstruct"), max(10, n // 2))
    out["sample_grid_36"] = timed(lambda i: client.predict(run, 36, i, 1.0, api_name="/sample"), max(10, n // 2))
    out["slider_decode_http_8_clients"] = concurrent(
        url, lambda http, i: direct_post(http, url, "interpolate_frame", [run, i % m, (i + 1) % m, "slerp",
                                                                          (i % 50) / 50.0, None]),
        clients=8, per_client=max(10, n // 2))
    return out


def client_runs(client) -> list:
    info = client.view_api(return_format="dict", print_info=False)
    params = info["named_endpoints"]["/select_run"]["parameters"][0]
    enum = params.get("type", {}).get("enum") or []
    if enum:
        return enum
    default = params.get("parameter_default")
    return [default] if default else []


if __name__ == "__main__":
    sys.exit(main())
