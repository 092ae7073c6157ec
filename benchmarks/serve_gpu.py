"""HTTP service benchmark with the models on a GPU: ``trillium serve --device cuda`` under wrk. Writes JSON.

    benchmarks/device/serve_gpu.sh        # on the lent GPU machine (it carries what the image lacks)

The server, the load generator, the seeded home and the transactions are ``benchmarks/serve.py``'s
(imported from it): wrk with one thread on loopback, a home seeded by ``tests/e2e/seed.py``, one
API key, 5,000 simulated cards whose first 28 days train the served model, the next 7 warm the
online state (untimed) and the days after are the timed traffic, each run sending transactions no
earlier run sent. What differs, and why:

- the finance model is ``gbt+seq`` (the product's default: LightGBM plus a GRU over the card's
  previous transactions) rather than the GBT alone, so that the route has a torch member to put on
  the GPU; the GBT runs on the CPU whatever the device (LightGBM's predictor);
- the inspector is the product's default segmenter at 256 px (width 16) rather than the seed's
  32 px toy, fitted for 3 steps (the weights do not change the speed, as in
  ``benchmarks/manufacturing.py``), autotuned on the GPU by the core runtime and registered, so
  each worker rebuilds that choice; images are 256 x 256 PNGs;
- more simulated days (so the faster runs do not reach the end of the file: if one does, the
  JSON says how many transactions were sent twice, which the service answers from stored results);
- a check from inside the server that the models run on the GPU: ``/readyz`` names each model's
  backends (their names end with the device), asked until every worker has answered, and
  ``nvidia-smi`` lists the worker processes holding GPU memory;
- optionally (part ``cpu``) the same server with ``--device cpu`` on the same host, at the GPU's
  best concurrency: what the GPU buys there.

The load generator, Redis and the server's workers share the machine's CPU cores; the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve as cpu  # benchmarks/serve.py: server, wrk, seed, transactions, finance runs

log = cpu.log


def _run_python(code: str, home: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=home,
                          env={**os.environ, "TRILLIUM_HOME": str(home)}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_finance(work: Path, home: Path, kind: str) -> dict[str, Any]:
    """The served fraud model: ``kind`` trained on the bench population's first 28 days (the
    history ``serve.transactions`` wrote), registered as the new production version."""
    code = ("import json, time, pandas as pd\n"
            "from trillium.finance.lifecycle import train_model\n"
            "t = time.perf_counter()\n"
            f"r = train_model(pd.read_parquet({str(work / 'history.parquet')!r}), kind={kind!r}, train_days=21, "
            "holdout_days=7, autotune=False)\n"
            "print(json.dumps({'version': r.record.version, 'kind': r.model.kind, 'train_s': time.perf_counter() - t,"
            " 'average_precision': r.metrics.get('average_precision')}))\n")
    return _run_python(code, home)


def register_inspector(home: Path, size: int, device: str, autotune: bool) -> dict[str, Any]:
    """The product's default segmenter at ``size`` px, fitted for 3 steps on synthetic good parts,
    autotuned on ``device`` (batches of 1, 8, 32) and registered as the production inspector."""
    code = ("import json, sys, time\n"
            "from trillium.manufacturing.detector import DefectDetector\n"
            "from trillium.manufacturing.pipeline import Inspector\n"
            "from trillium.manufacturing.synth import synthetic_images\n"
            "size, device, tune = int(sys.argv[1]), sys.argv[2], sys.argv[3] == '1'\n"
            "good, _ = synthetic_images(16, size=size, seed=1)\n"
            "det = DefectDetector(size=size, steps=3, batch_size=4, val_fraction=0.25).fit(good.transpose(0, 3, 1, 2))\n"
            "t = time.perf_counter(); error = None\n"
            "try:\n"
            "    rt = det.use_runtime(sizes=(1, 8, 32), device=device, autotune=tune)\n"
            "except Exception as exc:  # recorded: the server then runs eager fp32 on the device\n"
            "    error = f'{type(exc).__name__}: {exc}'[:300]\n"
            "    rt = det.use_runtime(device=device, autotune=False)\n"
            "tune_s = time.perf_counter() - t\n"
            "rec = Inspector(det).register()\n"
            "print(json.dumps({'version': rec.version, 'size': size, 'width': det.width, 'model': det.model,\n"
            "                  'autotune_s': tune_s, 'autotune_error': error, 'routes': rt.routes,\n"
            "                  'candidates': {c['name']: c['status'] for c in rt.report.get('candidates', [])}}))\n")
    return _run_python(code, home, str(size), device, "1" if autotune else "0")


def worker_pids(server_pid: int) -> list[int]:
    """The server's descendant processes (uvicorn's workers, and its multiprocessing helper)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [server_pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return sorted(found)


def on_device_check(server: cpu.Server, workers: int) -> dict[str, Any]:
    """From inside the server: each worker's ``/readyz`` backends (asked until every worker answered
    or 40 tries), and the worker processes that hold GPU memory according to nvidia-smi."""
    seen: dict[int, Any] = {}
    bodies: list[dict[str, Any]] = []
    for _ in range(40):
        with httpx.Client(timeout=10) as c:  # a fresh connection: another worker may take it
            body = c.get(server.url + "/readyz").json()
        bodies.append({label: m.get("backends") for label, m in body["models"].items()})
        seen[hash(json.dumps(bodies[-1], sort_keys=True))] = bodies[-1]
        if len(bodies) >= 3 * workers:
            break
    pids = worker_pids(server.proc.pid)
    gpu_pids: dict[int, int] = {}
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit():
                gpu_pids[int(parts[0])] = int(parts[1]) if parts[1].isdigit() else -1
    on_gpu = sorted(p for p in pids if p in gpu_pids)
    return {"readyz_backends_distinct": list(seen.values()), "readyz_asked": len(bodies),
            "server_processes": len(pids), "server_processes_on_gpu": len(on_gpu),
            "gpu_memory_mib_by_process": {str(p): gpu_pids[p] for p in on_gpu},
            "nvidia_smi_pids_not_ours": sorted(set(gpu_pids) - set(pids))}


class GpuSampler:
    """nvidia-smi's utilisation and memory every 200 ms while a run lasts (mean and max)."""

    def __init__(self) -> None:
        self.smi = shutil.which("nvidia-smi")
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        if self.smi:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            out = subprocess.run([self.smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, check=False).stdout.strip().splitlines()
            try:
                util, mem = (float(v) for v in out[0].split(","))
            except (IndexError, ValueError):
                continue
            self.samples.append((util, mem))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.smi:
            self._thread.join(5)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        util = [s[0] for s in self.samples]
        return {"gpu_util_pct_mean": sum(util) / len(util), "gpu_util_pct_max": max(util),
                "gpu_memory_mib_max": max(s[1] for s in self.samples), "samples": len(util)}


def image_body(work: Path, size: int) -> tuple[Path, str, Path]:
    import io

    import numpy as np
    from PIL import Image

    from trillium.manufacturing.synth import synthetic_images

    images, _ = synthetic_images(1, size=size, seed=3, defect="scratch")
    buf = io.BytesIO()
    Image.fromarray((images[0][..., 0] * 255).round().astype("uint8")).save(buf, format="PNG")
    body, ctype = cpu.multipart(buf.getvalue())
    body_file = work / "image.bin"
    body_file.write_bytes(body)
    np.save(work / "image.npy", images[0])
    return body_file, ctype, work / "image.npy"


def images_http(url: str, key: str, work: Path, body_file: Path, ctype: str, concurrency: list[int],
                seconds: int) -> list[dict[str, Any]]:
    lua = work / "file.lua"
    lua.write_text(cpu.LUA_FILE)
    env = {"BENCH_BODY_FILE": str(body_file), "BENCH_PATH": "/v1/manufacturing/inspect", "BENCH_KEY": key,
           "BENCH_CTYPE": ctype}
    runs = []
    for c in concurrency:
        with GpuSampler() as gpu:
            r = cpu.wrk(url, lua=lua, env=env, connections=c, seconds=seconds)
        r["images_per_s"] = r["requests_per_s"]
        r["gpu"] = gpu.summary()
        log(f"  images c={c}: {r['images_per_s']:.1f}/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"non-2xx {r['non_2xx']}, GPU {r['gpu'].get('gpu_util_pct_mean', float('nan')):.0f}%")
        runs.append(r)
    return runs


def images_in_process(home: Path, image: Path, batch: int, seconds: int, device: str) -> dict[str, Any]:
    """The registered inspector in one process on ``device``, batches of ``batch`` (no HTTP, no PNG decode)."""
    code = ("import json, sys, time, numpy as np\n"
            "from trillium.manufacturing.pipeline import Inspector\n"
            "insp = Inspector.from_registry(device=sys.argv[4])\n"
            "img, n_batch, seconds = np.load(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])\n"
            "batch, ids = [img] * n_batch, [str(i) for i in range(n_batch)]\n"
            "for _ in range(3): insp.inspect_arrays(batch, ids)\n"
            "t = time.perf_counter(); n = 0\n"
            "while time.perf_counter() - t < seconds:\n"
            "    insp.inspect_arrays(batch, ids); n += n_batch\n"
            "print(json.dumps({'images_per_s': n / (time.perf_counter() - t), 'batch': n_batch,\n"
            "                  'backends': {k: rt.routes for k, rt in insp.runtimes().items()}}, default=str))\n")
    return _run_python(code, home, str(image), str(batch), str(seconds), device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=cpu.REPO / "benchmarks" / "results" / "serve_gpu.json")
    parser.add_argument("--device", default="cuda", help="Where the served models run (trillium serve --device).")
    parser.add_argument("--seconds", type=int, default=10, help="Length of each wrk run.")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--concurrency", default="16,64,256", help="wrk connections, finance single route.")
    parser.add_argument("--image-concurrency", default="4,16,64", help="wrk connections, manufacturing route.")
    parser.add_argument("--finance-kind", default="gbt+seq")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--days", type=int, default=200, help="Simulated days (28 train, 7 warm, the rest timed).")
    parser.add_argument("--list-size", type=int, default=1000)
    parser.add_argument("--list-seconds", type=int, default=5, help="Length of the list run (it uses transactions "
                        "fastest).")
    parser.add_argument("--no-autotune", action="store_true", help="Serve the inspector eager fp32 on the device.")
    parser.add_argument("--skip", default="", help="Comma-separated parts to skip: lists,manufacturing,inprocess,cpu")
    parser.add_argument("--keep", action="store_true", help="Keep the seeded home (printed).")
    parser.add_argument("--logs", type=Path, default=None, help="Copy the server logs into this folder.")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("benchmarks/serve_gpu.py needs wrk on the PATH", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    concurrency = [int(c) for c in args.concurrency.split(",")]
    image_concurrency = [int(c) for c in args.image_concurrency.split(",")]
    from trillium.core.runtime import inference_device
    from trillium.core.runtime.hardware import detect

    device = inference_device(args.device)
    os.environ["TRILLIUM_DEVICE"] = device  # the server and the in-process comparison load there
    home = Path(tempfile.mkdtemp(prefix="trillium-serve-gpu-bench-"))
    work = home / "bench"
    work.mkdir()
    hw = detect().as_dict()
    report: dict[str, Any] = {
        "device": device, "device_name": hw.get("cuda_name"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), **hw},
        "load_generator": f"wrk (one thread) on the same machine: it shares its {os.cpu_count()} CPU cores with the "
                          f"server's {args.workers} workers, the server's parent, Redis and this script",
        "seconds_per_run": args.seconds, "workers": args.workers, "batcher": "the service's defaults (max 64, 1 ms)",
    }

    def save() -> None:  # after every part: a run cut short still leaves what it measured
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))

    try:
        t0 = time.perf_counter()
        log(f"seeding {home}")
        key = cpu.seed(home)
        log("simulating 5,000 cards")
        report["data"] = cpu.transactions(work, home, n_days=args.days)
        log(f"transactions: {report['data']}; training the served {args.finance_kind} model")
        report["finance_model"] = train_finance(work, home, args.finance_kind)
        log(f"finance model: {report['finance_model']}")
        if "manufacturing" not in skip:
            report["inspector"] = register_inspector(home, args.image_size, device, not args.no_autotune)
            log(f"inspector: {report['inspector']}")
        report["setup_s"] = time.perf_counter() - t0
        save()
        tx_file = work / "transactions.jsonl"
        n_tx = report["data"]["transactions"]
        offset = [0]
        fields = "finance" if "manufacturing" in skip else "finance,manufacturing"
        server = cpu.Server(home, args=["--workers", str(args.workers), "--device", device, "--fields", fields])
        try:
            report["on_device"] = on_device_check(server, args.workers)
            log(f"on device: {report['on_device']}")
            save()
            log("warming the online state with 7 days sent as lists")
            report["warm_tx_per_s"] = cpu.warm(server.url, key, work / "warm.jsonl")
            log(f"finance, one transaction per request, {args.workers} workers, Redis state, models on {device}")
            with GpuSampler() as gpu:
                report["finance_single"] = cpu.finance_single(server.url, key, work, tx_file, offset, concurrency,
                                                              args.seconds)
            report["finance_single_gpu"] = gpu.summary()
            save()
            if "lists" not in skip:
                log(f"finance, lists of {args.list_size}")
                with GpuSampler() as gpu:
                    report["finance_list"] = cpu.finance_lists(server.url, key, work, tx_file, offset[0], args.list_size,
                                                               args.list_seconds)
                report["finance_list"]["gpu"] = gpu.summary()
                offset[0] += report["finance_list"]["requests"] * args.list_size + 2000
                save()
            if "manufacturing" not in skip:
                log("manufacturing")
                body_file, ctype, npy = image_body(work, args.image_size)
                report["manufacturing"] = {"image": f"{args.image_size} x {args.image_size} PNG, grey, "
                                                    f"{body_file.stat().st_size} bytes with its multipart envelope",
                                           "http": images_http(server.url, key, work, body_file, ctype, image_concurrency,
                                                               args.seconds)}
                save()
        finally:
            server.stop()
        report["transactions_sent_twice"] = max(0, offset[0] - n_tx)
        if "manufacturing" not in skip and "inprocess" not in skip:
            log(f"in-process inspector on {device}, batches of 32")
            inproc = images_in_process(home, npy, 32, args.seconds, device)
            best = max(report["manufacturing"]["http"], key=lambda r: r["images_per_s"])
            report["manufacturing"]["in_process"] = inproc
            report["manufacturing"]["http_over_in_process"] = best["images_per_s"] / inproc["images_per_s"]
            log(f"  in-process: {inproc['images_per_s']:.1f} images/s")
            save()
        if "cpu" not in skip and device != "cpu":
            best_tx = max(report["finance_single"], key=lambda r: r["requests_per_s"])
            log(f"the same server with --device cpu on this host: finance c={best_tx['connections']}")
            base = cpu.Server(home, args=["--workers", str(args.workers), "--device", "cpu", "--fields", fields],
                              env={"TRILLIUM_DEVICE": "cpu"})
            try:
                cmp: dict[str, Any] = {"note": "same host, same workers; the inspector's GPU autotune does not apply "
                                               "on the CPU, so it runs eager fp32 there"}
                cpu.warm(base.url, key, work / "warm.jsonl")
                cmp["finance_single"] = cpu.finance_single(base.url, key, work, tx_file, offset,
                                                           [best_tx["connections"]], args.seconds)[0]
                if "manufacturing" not in skip:
                    best_img = max(report["manufacturing"]["http"], key=lambda r: r["images_per_s"])
                    cmp["manufacturing"] = images_http(base.url, key, work, body_file, ctype, [best_img["connections"]],
                                                       args.seconds)[0]
                    cmp["images_gpu_over_cpu"] = best_img["images_per_s"] / cmp["manufacturing"]["images_per_s"]
                cmp["finance_gpu_over_cpu"] = best_tx["requests_per_s"] / cmp["finance_single"]["requests_per_s"]
                report["cpu_same_host"] = cmp
            finally:
                base.stop()
            report["transactions_sent_twice"] = max(0, offset[0] - n_tx)
        within = [r for r in report["finance_single"] if r["p99_ms"] is not None and r["p99_ms"] <= 45 and not r["non_2xx"]]
        report["summary"] = {
            "device_name": report["device_name"], "workers": args.workers, "cpu_count": os.cpu_count(),
            "finance_single_best_tx_per_s": max(r["requests_per_s"] for r in report["finance_single"]),
            "finance_single_tx_per_s_at_p99_le_45ms": max((r["requests_per_s"] for r in within), default=0.0),
            "finance_list_tx_per_s": report.get("finance_list", {}).get("transactions_per_s"),
            "images_best_per_s": max((r["images_per_s"] for r in report.get("manufacturing", {}).get("http", [])),
                                     default=None),
        }
        report["total_s"] = time.perf_counter() - t0
        save()
        print(json.dumps(report["summary"], indent=1))
    finally:
        if args.logs:  # the server logs, also when a part failed
            args.logs.mkdir(parents=True, exist_ok=True)
            for src in home.glob("serve-*.log"):
                shutil.copy(src, args.logs / src.name)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            log(f"kept {home}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
