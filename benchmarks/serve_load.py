"""Load on `vipet serve`: concurrent clients on loopback, latency percentiles, errors.

Starts the service (uvicorn, in this process) around a saved model (``--checkpoint``;
without one, a tiny random model: the service is measured, not the model), uploads one
study (a NIfTI pair), then ``--clients`` threads each send ``--requests`` requests in
turn: slice PNGs on all three axes, the MIP and questions (``--ask-share`` of them).
The first report is made before the clock starts. Prints p50/p95/max latency per kind
and overall, the error count, requests per second and the process's peak resident
memory (server and clients together); ``--json`` writes them.

    python benchmarks/serve_load.py [--checkpoint runs/cpu-small/model] [--clients 16 --requests 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, data in files:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _request(url: str, data: bytes | None = None, ctype: str | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.read()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--ask-share", type=float, default=0.2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    import uvicorn

    from vipet.io.example import make_example_study
    from vipet.io.nifti import write_nifti_volume
    from vipet.serve.app import create_app

    if args.checkpoint is not None:
        app = create_app(args.checkpoint)
        name = str(args.checkpoint)
    else:
        from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
        from vipet.inference.predictor import Predictor
        from vipet.model.presets import build_model

        torch.manual_seed(0)
        tok = train_tokenizer(synthetic_corpus(10, 0), vocab_size=500)
        app = create_app(predictor=Predictor(build_model("tiny", tok), tok))
        name = "tiny random model"
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"

    with tempfile.TemporaryDirectory() as tmp:
        study = make_example_study(seed=0)
        write_nifti_volume(study.ct, Path(tmp) / "ct.nii.gz")
        write_nifti_volume(study.pet, Path(tmp) / "pet.nii.gz")
        body, ctype = _multipart(
            [(n, (Path(tmp) / n).read_bytes()) for n in ("ct.nii.gz", "pet.nii.gz")]
        )
    sid = json.loads(_request(f"{base}/api/studies", body, ctype))["id"]
    info = json.loads(_request(f"{base}/api/studies/{sid}"))
    t0 = time.perf_counter()
    _request(f"{base}/api/studies/{sid}/report?lang=vi", b"")
    first_report = time.perf_counter() - t0

    question = json.dumps(
        {"question": "Kết quả PET/CT có bình thường không?", "lang": "vi"}
    ).encode()
    plan = []
    every = max(1, round(1 / args.ask_share)) if args.ask_share > 0 else 0
    for i in range(args.requests):
        if every and i % every == every - 1:
            plan.append(("ask", f"{base}/api/studies/{sid}/ask", question, "application/json"))
        elif i % 4 == 3:
            plan.append(("mip", f"{base}/api/studies/{sid}/mip.png", None, None))
        else:
            axis = ("axial", "coronal", "sagittal")[i % 3]
            n = info["shape"][axis]
            url = f"{base}/api/studies/{sid}/slice/{axis}/{(i * 7) % n}.png?window=lung"
            plan.append(("slice", url, None, None))

    latencies: dict[str, list[float]] = {"slice": [], "mip": [], "ask": []}
    errors = []
    lock = threading.Lock()

    def client(_: int) -> None:
        for kind, url, data, ct in plan:
            t = time.perf_counter()
            try:
                _request(url, data, ct)
            except Exception as exc:  # counted, not raised: the figure is the error count
                with lock:
                    errors.append(f"{kind}: {exc}")
                continue
            with lock:
                latencies[kind].append(time.perf_counter() - t)

    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(client, range(args.clients)))
    wall = time.perf_counter() - start
    server.should_exit = True

    everything = [v for vs in latencies.values() for v in vs]
    rows = {k: v for k, v in latencies.items() if v}
    rows["all"] = everything
    result = {
        "model": name,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "errors": len(errors),
        "first_report_s": round(first_report, 2),
        "requests_per_s": round(len(everything) / wall, 1),
        # the server and its clients share this process: an upper bound on the server's
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "latency_s": {
            k: {
                "n": len(v),
                "p50": round(statistics.median(v), 3),
                "p95": round(_pct(v, 0.95), 3),
                "max": round(max(v), 3),
            }
            for k, v in rows.items()
        },
    }
    print(f"{args.clients} clients x {args.requests} requests on loopback ({name})")
    print("| kind | n | p50 s | p95 s | max s |\n|---|---|---|---|---|")
    for k, v in result["latency_s"].items():
        print(f"| {k} | {v['n']} | {v['p50']} | {v['p95']} | {v['max']} |")
    print(
        f"errors: {len(errors)}; {result['requests_per_s']} requests/s; first report "
        f"{first_report:.2f} s; peak RSS {result['peak_rss_mb']} MB (server and clients)"
    )
    for e in errors[:5]:
        print("  ", e)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
