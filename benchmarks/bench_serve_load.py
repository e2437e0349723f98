"""Load on `visec serve`: 1,000 analyze requests from 20 concurrent clients over loopback.

The server is the real command (``python -m visec.cli serve``, 2 workers, a waiting line of 64) with
one tiny trained run (the tiny CNN on the toy set, trained here unless ``--runs`` names a folder).
Each request uploads the same 256 x 256 face photo (skimage's astronaut) to ``POST /api/analyze``.
Two phases of ``--requests`` each: all good uploads, then the same with 5 % malformed ones mixed in
(a text file, a truncated PNG, a decompression-bomb header, an empty body, a broken MP4, in turn).
An error is any answer that is not 200 for a good upload or not the expected 4xx for a malformed
one (a 5xx, a timeout, a refused connection). Reported per phase: errors, requests/s, latency
p50 / p95 / p99, and the server's resident memory (``/proc/PID/status`` VmRSS) after a 20-request
warm-up and after the phase; the bound is 50 MB of growth per phase.

The baseline, in this process, is the same analysis called directly (``Analyzer.analyze`` on the
same file, one at a time): ``served / direct`` is the throughput the HTTP layer, the upload and
the pool leave of the analysis itself.

    python benchmarks/bench_serve_load.py [--requests 1000] [--clients 20] [--runs DIR]

Not a test; nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

MEMORY_BOUND_MB = 50.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _tiny_run(folder: Path) -> Path:
    from visec.config import load_config
    from visec.data.toy import make_toy_dataset
    from visec.engine import Engine

    manifest = make_toy_dataset(folder / "toy", seed=0, size=32)
    engine = Engine(load_config("classifier", [f"data.manifest={manifest}", "train.max_epochs=1",
                                               "train.bootstrap=0", f"output_dir={folder / 'runs'}", "name=tiny"]))
    engine.fit()
    engine.test()
    return folder / "runs"


def _files(folder: Path) -> tuple[bytes, list[tuple[str, bytes, int]]]:
    import cv2
    from skimage.data import astronaut

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "apps"))
    from conftest import png_declaring  # the tests' decompression-bomb header

    face = cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    good = buf.tobytes()
    (folder / "face.png").write_bytes(good)
    bad = [("notes.png", b"plain text, not an image\n" * 8, 415), ("truncated.png", good[:2000], 422),
           ("bomb.png", png_declaring(100_000, 100_000), 422), ("empty.png", b"", 400),
           ("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, 422)]
    return good, bad


def _phase(url: str, good: bytes, bad: list[tuple[str, bytes, int]], n: int, clients: int, bad_share: float):
    import httpx

    local = threading.local()
    every = int(round(1 / bad_share)) if bad_share else 0

    def one(k: int) -> tuple[float, bool, bool]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=120)
        malformed = bool(every) and k % every == every - 1
        name, content, expected = bad[(k // max(every, 1)) % len(bad)] if malformed else ("face.png", good, 200)
        start = time.perf_counter()
        try:
            r = local.client.post(url, content=content, headers={"X-Filename": name})
            ok = r.status_code == expected and (expected != 200 or r.json()["ensemble"]["voters"] == 1)
        except Exception:  # a refused or reset connection, a timeout: an error of the run
            ok = False
        return time.perf_counter() - start, ok, malformed

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    return results, wall


def _line(label: str, results, wall: float, rss: tuple[float, float]) -> str:
    import numpy as np

    lat = np.array([r[0] for r in results]) * 1000
    errors = sum(not r[1] for r in results)
    malformed = sum(r[2] for r in results)
    growth = rss[1] - rss[0]
    return (f"{label:<22} {len(results):>5} req ({malformed} malformed)  errors {errors}  "
            f"{len(results) / wall:6.1f} req/s  latency ms p50 {np.percentile(lat, 50):6.0f} "
            f"p95 {np.percentile(lat, 95):6.0f} p99 {np.percentile(lat, 99):6.0f}  "
            f"RSS {rss[0]:.0f} -> {rss[1]:.0f} MB ({growth:+.1f}; bound {MEMORY_BOUND_MB:.0f}: "
            f"{'ok' if growth <= MEMORY_BOUND_MB else 'OVER'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--direct", type=int, default=100, help="in-process analyses for the baseline")
    parser.add_argument("--runs", type=Path, default=None)
    args = parser.parse_args()

    import httpx

    from visec.apps.analyze import Analyzer
    from visec.federated.deploy import free_port, stop, wait_port

    with tempfile.TemporaryDirectory(prefix="visec-load-") as tmp:
        folder = Path(tmp)
        runs = args.runs or _tiny_run(folder)
        good, bad = _files(folder)

        analyzer = Analyzer.from_runs(runs)
        analyzer.analyze(folder / "face.png")
        start = time.perf_counter()
        for _ in range(args.direct):
            analyzer.analyze(folder / "face.png")
        direct = args.direct / (time.perf_counter() - start)
        del analyzer

        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "visec.cli", "serve", "--runs", str(runs), "--port", str(port),
                                 "--workers", "2", "--queue", "64"], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", port, timeout=120)
            url = f"http://127.0.0.1:{port}/api/analyze"
            with httpx.Client(timeout=120) as c:
                for _ in range(20):
                    assert c.post(url, content=good, headers={"X-Filename": "face.png"}).status_code == 200
            lines = []
            for label, share in (("good uploads", 0.0), ("5% malformed", 0.05)):
                before = _rss_mb(proc.pid)
                results, wall = _phase(url, good, bad, args.requests, args.clients, share)
                lines.append((label, results, wall, (before, _rss_mb(proc.pid))))
            health = httpx.get(f"http://127.0.0.1:{port}/api/health").json()
        finally:
            stop(proc)
    print(f"visec serve, {args.clients} concurrent clients, 2 workers, one tiny run, 256 px face PNG "
          f"({len(good):,} bytes), {os.cpu_count()} CPUs")
    for label, results, wall, rss in lines:
        print(_line(label, results, wall, rss))
    served = args.requests / lines[0][2]
    print(f"direct Analyzer.analyze in this process: {direct:.1f} analyses/s; served/direct = {served / direct:.2f}x")
    print(f"server: {health['served']} served, {health['rejected']} refused as busy")


if __name__ == "__main__":
    main()
