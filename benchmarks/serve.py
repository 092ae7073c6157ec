"""HTTP service benchmark: ``trillium serve`` under load from ``wrk`` on loopback. Writes JSON.

    .venv/bin/python benchmarks/serve.py --json benchmarks/results/serve_cpu.json

The load generator is Debian's ``wrk`` (C, one thread): a Python client would measure itself
(about 600 requests/s here), not the server. It shares the machine's cores with the server, its
workers and Redis; the figures say so. Every run is bounded (``--seconds`` each) and sends only
to 127.0.0.1.

A home is seeded as the service tests seed theirs (``tests/e2e/seed.py``: the small finance GBT
model, a manufacturing inspector, stored notes), with one API key. Then:

1. Finance, one transaction per request, at rising concurrency: requests/s and p50/p99 from
   wrk's latency distribution. Transactions are the simulator's (5,000 cards, 10,000 terminals,
   in time order): the served model is trained on their first 28 days (so the budget of 100
   alerts a day gives the alert rate a bank sees, and reasons are computed for those), the next
   7 days warm the online state (sent as lists, untimed), and the timed runs send the days after,
   each run transactions no earlier run sent (nothing is answered from stored results).
2. The baseline in the same run: the same model behind one worker, the batcher capped at one
   request per model call and the in-memory state (``--workers 1 --max-batch 1``).
3. Finance lists of 1,000 transactions per request: transactions/s.
4. Manufacturing: a 256 x 256 PNG per request, images/s and p50/p99, against ``Inspector``
   in-process on the same image (``inspect_arrays``, batches of 16): the HTTP/in-process ratio.
5. Notes: a discharge-summary-length note per request, notes/s over HTTP, against
   ``RecordStructurer.structure`` in-process.
6. The score route's fast handler against FastAPI's own handler of the same route
   (``TRILLIUM_SERVE_FAST_ROUTES=0``), at the best concurrency of part 1.
   Parts 1 and 6 also give the CPU each request cost the server's processes, Redis and wrk
   (CPU seconds over requests, so other load on the machine does not inflate them much).
7. The batcher's two forms for the finance route, in the event loop's thread (``--batcher async``,
   the default) and in a thread of its own (``--batcher thread``): both servers up at once,
   interleaved rounds of the same transactions (``compare_batchers``: parts of one run that come
   one after the other are not comparable), median tx/s and p99 per form.
8. The server: the same application and settings under granian instead of uvicorn, the finance
   single route at uvicorn's best concurrency (why ``trillium serve`` runs uvicorn).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "tests" / "e2e" / "seed.py"
REDIS_URL = os.environ.get("TRILLIUM_REDIS_URL", "redis://127.0.0.1:6379/0")

NOTE = """ADMISSION DATE: 2024-03-02
HISTORY OF PRESENT ILLNESS: 67-year-old man with hypertension and type 2 diabetes presents with two
days of productive cough and fever. He denies chest pain or hemoptysis. No history of asthma.
His mother had breast cancer.
MEDICATIONS: metformin 500 mg PO BID, lisinopril 10 mg PO daily, aspirin 81 mg daily.
ALLERGIES: penicillin (rash).
VITAL SIGNS: BP 148/92, HR 104, RR 22, T 38.6 C, SpO2 91% on room air.
PHYSICAL EXAM: crackles at the right base. No leg edema.
ASSESSMENT AND PLAN: community-acquired pneumonia, possible sepsis ruled out. Start ceftriaxone
1 g IV q24h and azithromycin 500 mg PO daily. Continue metformin. Follow up chest x-ray in 6 weeks.
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ wrk
LUA_LINES = """
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local path, key, ctype = os.getenv("BENCH_PATH"), os.getenv("BENCH_KEY"), os.getenv("BENCH_CTYPE")
local i = tonumber(os.getenv("BENCH_START") or "0")
request = function()
  i = i + 1
  if i > #bodies then i = 1 end
  return wrk.format("POST", path, {["Content-Type"] = ctype, ["X-API-Key"] = key}, bodies[i])
end
"""

LUA_FILE = """
local f = io.open(os.getenv("BENCH_BODY_FILE"), "rb")
local body = f:read("*all")
f:close()
local path, key, ctype = os.getenv("BENCH_PATH"), os.getenv("BENCH_KEY"), os.getenv("BENCH_CTYPE")
request = function()
  return wrk.format("POST", path, {["Content-Type"] = ctype, ["X-API-Key"] = key}, body)
end
"""


def wrk(url: str, *, lua: Path, env: dict[str, str], connections: int, seconds: int) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s", "-s", str(lua), url]
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=seconds + 60, check=False)
    text = out.stdout
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stderr or text}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    lat = {}
    for q, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE):
        lat[q] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"connections": connections, "seconds": seconds, "requests": total, "requests_per_s": rps,
            "p50_ms": lat.get("50"), "p90_ms": lat.get("90"), "p99_ms": lat.get("99"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


# ------------------------------------------------------------------ server
class Server:
    """``trillium serve`` (uvicorn), or with ``granian=True`` the same application under granian
    (the same settings through ``TRILLIUM_SERVE_*``), to compare the two servers in one run."""

    def __init__(self, home: Path, *, args: list[str], env: dict[str, str] | None = None,
                 granian_workers: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.log = (home / f"serve-{self.port}.log").open("w")
        full_env = {**os.environ, "TRILLIUM_HOME": str(home), "TRILLIUM_REDIS_PREFIX": self.prefix,
                    "OMP_NUM_THREADS": "1", **(env or {})}
        if granian_workers:
            metrics = home / f"metrics-{self.port}"
            metrics.mkdir()
            full_env.update({"PROMETHEUS_MULTIPROC_DIR": str(metrics), "TRILLIUM_SERVE_WORKERS": str(granian_workers),
                             "TRILLIUM_SERVE_REDIS_URL": REDIS_URL})
            cmd = [str(Path(sys.executable).with_name("granian")), "--interface", "asgi", "--factory", "--workers",
                   str(granian_workers), "--host", "127.0.0.1", "--port", str(self.port), "--loop", "uvloop",
                   "--no-ws", "trillium.core.service.app:create_app"]
        else:
            cmd = [sys.executable, "-m", "trillium.core.cli", "serve", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=self.log, stderr=subprocess.STDOUT, cwd=home)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(home / f'serve-{self.port}.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server not ready in 300 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        import redis

        # the run's keys, unlinked in batches of 1,000 (one round trip each; a DEL per key took
        # about 2.5 minutes per server after a full run)
        client = redis.Redis.from_url(REDIS_URL)
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)


def seed(home: Path) -> str:
    env = {**os.environ, "TRILLIUM_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SEED), str(home)], env=env, capture_output=True, text=True, cwd=home,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    key_file = home / "bench.key"
    subprocess.run([sys.executable, "-m", "trillium.core.cli", "keys", "create", "--owner", "benchmark", "--role",
                    "admin", "--key-file", str(key_file)], env=env, check=True, capture_output=True, cwd=home)
    return key_file.read_text().strip()


TRAIN_DAYS, WARM_DAYS = 28, 7


def transactions(work: Path, home: Path, n_days: int) -> dict[str, int]:
    """Simulate the bench population; train the served model on its first 28 days (as a bank trains
    on its own cards, so the daily alert budget gives a realistic alert rate); write the next 7 days
    (to warm the online state, untimed) and the rest (the timed traffic) as one JSON body a line."""
    import pandas as pd

    from trillium.finance.simulate import simulate_transactions

    frame = simulate_transactions(n_customers=5000, n_terminals=10000, n_days=n_days, seed=21)
    day = ((frame["timestamp"] - frame["timestamp"].min().normalize()) // pd.Timedelta(days=1)).to_numpy()
    frame[day < TRAIN_DAYS].to_parquet(work / "history.parquet", index=False)
    code = ("import pandas as pd\n"
            "from trillium.finance.lifecycle import train_model\n"
            f"r = train_model(pd.read_parquet({str(work / 'history.parquet')!r}), kind='gbt', train_days=21, "
            "holdout_days=7, autotune=False)\n"
            "print(r.record.version)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=home,
                          env={**os.environ, "TRILLIUM_HOME": str(home)}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    rest = frame.drop(columns=["label", "fraud_scenario"], errors="ignore")
    counts = {}
    for name, part in (("warm", rest[(day >= TRAIN_DAYS) & (day < TRAIN_DAYS + WARM_DAYS)]),
                       ("transactions", rest[day >= TRAIN_DAYS + WARM_DAYS])):
        with (work / f"{name}.jsonl").open("w") as out:
            for r in part.to_dict("records"):
                r["timestamp"] = r["timestamp"].isoformat()
                r["transaction_id"] = f"s{r['transaction_id']}"
                out.write(json.dumps(r, separators=(",", ":")) + "\n")
        counts[name] = len(part)
    counts["trained_on"] = int((day < TRAIN_DAYS).sum())
    return counts


def warm(url: str, key: str, path: Path, size: int = 2000) -> float:
    """Send the warm-up days as lists (untimed), so cards and terminals have history when timed."""
    lines = path.read_text().splitlines()
    t = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600, headers={"X-API-Key": key, "Content-Type": "application/json"}) as c:
        for i in range(0, len(lines), size):
            r = c.post("/v1/finance/score", content="[" + ",".join(lines[i:i + size]) + "]")
            r.raise_for_status()
    return len(lines) / (time.perf_counter() - t)


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children (the server's workers)."""
    total = 0.0
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    pids = [str(pid), *children]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _redis_cpu() -> float:
    import redis

    info = redis.Redis.from_url(REDIS_URL).info("cpu")
    return float(info["used_cpu_user"] + info["used_cpu_sys"])


def finance_single(url: str, key: str, work: Path, tx_file: Path, offset: list[int], concurrency: list[int],
                   seconds: int, server_pid: int | None = None) -> list[dict[str, Any]]:
    """wrk at each concurrency; with ``server_pid``, also the CPU each request cost the server's
    processes, Redis and wrk (CPU time, not wall time: it says where the machine's cores went)."""
    import resource

    lua = work / "lines.lua"
    lua.write_text(LUA_LINES)
    runs = []
    for c in concurrency:
        env = {"BENCH_BODIES": str(tx_file), "BENCH_PATH": "/v1/finance/score", "BENCH_KEY": key,
               "BENCH_CTYPE": "application/json", "BENCH_START": str(offset[0])}
        before = (_process_cpu(server_pid), _redis_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)) \
            if server_pid else None
        r = wrk(url, lua=lua, env=env, connections=c, seconds=seconds)
        r["first_transaction"] = offset[0]  # a comparison sends the same ones to its other server
        if before is not None and r["requests"]:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            n = r["requests"]
            r["cpu_us_per_request"] = {
                "server": round((_process_cpu(server_pid) - before[0]) / n * 1e6),
                "redis": round((_redis_cpu() - before[1]) / n * 1e6),
                "wrk": round(((after.ru_utime + after.ru_stime) - (before[2].ru_utime + before[2].ru_stime)) / n * 1e6),
            }
        offset[0] += r["requests"] + 1000
        r["transactions_per_s"] = r["requests_per_s"]
        log(f"  c={c}: {r['requests_per_s']:.0f} tx/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"non-2xx {r['non_2xx']}, CPU us/request {r.get('cpu_us_per_request')}")
        runs.append(r)
    return runs


def finance_lists(url: str, key: str, work: Path, tx_file: Path, offset: int, size: int, seconds: int
                  ) -> dict[str, Any]:
    lines = tx_file.read_text().splitlines()[offset:]
    bodies = work / "lists.jsonl"
    with bodies.open("w") as out:
        for i in range(0, len(lines) - size + 1, size):
            out.write("[" + ",".join(lines[i:i + size]) + "]\n")
    lua = work / "lines.lua"
    lua.write_text(LUA_LINES)
    env = {"BENCH_BODIES": str(bodies), "BENCH_PATH": "/v1/finance/score", "BENCH_KEY": key,
           "BENCH_CTYPE": "application/json", "BENCH_START": "0"}
    r = wrk(url, lua=lua, env=env, connections=2, seconds=seconds)
    r["list_size"] = size
    r["transactions_per_s"] = r["requests_per_s"] * size
    log(f"  lists of {size}: {r['transactions_per_s']:.0f} tx/s, p99 {r['p99_ms']} ms")
    return r


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "trilliumbench" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"part.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def manufacturing(url: str, key: str, work: Path, seconds: int, home: Path) -> dict[str, Any]:
    import io

    import numpy as np
    from PIL import Image

    from trillium.manufacturing.synth import synthetic_images

    images, _ = synthetic_images(1, size=256, seed=3, defect="scratch")
    arr = (images[0][..., 0] * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    body, ctype = multipart(buf.getvalue())
    body_file = work / "image.bin"
    body_file.write_bytes(body)
    lua = work / "file.lua"
    lua.write_text(LUA_FILE)
    env = {"BENCH_BODY_FILE": str(body_file), "BENCH_PATH": "/v1/manufacturing/inspect", "BENCH_KEY": key,
           "BENCH_CTYPE": ctype}
    runs = []
    for c in (4, 16):
        r = wrk(url, lua=lua, env=env, connections=c, seconds=seconds)
        log(f"  images c={c}: {r['requests_per_s']:.1f}/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        runs.append(r)
    # in-process: the same image through the registered inspector, batches of 16, one process
    code = ("import time, numpy as np, json, sys\n"
            "from trillium.manufacturing.pipeline import Inspector\n"
            "insp = Inspector.from_registry()\n"
            "img = np.load(sys.argv[1])\n"
            "batch = [img] * 16\n"
            "insp.inspect_arrays(batch, [str(i) for i in range(16)])\n"
            "t = time.perf_counter(); n = 0\n"
            f"while time.perf_counter() - t < {seconds}:\n"
            "    insp.inspect_arrays(batch, [str(i) for i in range(16)]); n += 16\n"
            "print(json.dumps({'images_per_s': n / (time.perf_counter() - t)}))\n")
    np.save(work / "image.npy", images[0])
    proc = subprocess.run([sys.executable, "-c", code, str(work / "image.npy")], capture_output=True, text=True,
                          env={**os.environ, "TRILLIUM_HOME": str(home), "OMP_NUM_THREADS": "2"}, cwd=home,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    inproc = json.loads(proc.stdout.strip().splitlines()[-1])
    best = max(runs, key=lambda r: r["requests_per_s"])
    log(f"  in-process: {inproc['images_per_s']:.1f} images/s")
    return {"http": runs, "in_process_images_per_s": inproc["images_per_s"],
            "http_over_in_process": best["requests_per_s"] / inproc["images_per_s"]}


def notes(url: str, key: str, work: Path, seconds: int) -> dict[str, Any]:
    body_file = work / "note.json"
    body_file.write_text(json.dumps({"text": NOTE}))
    lua = work / "file.lua"
    lua.write_text(LUA_FILE)
    env = {"BENCH_BODY_FILE": str(body_file), "BENCH_PATH": "/v1/medical/notes/structure", "BENCH_KEY": key,
           "BENCH_CTYPE": "application/json"}
    r = wrk(url, lua=lua, env=env, connections=8, seconds=seconds)
    from trillium.medical.records.structurer import RecordStructurer

    s = RecordStructurer()
    s.structure(NOTE)
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < min(seconds, 5):
        s.structure(NOTE)
        n += 1
    inproc = n / (time.perf_counter() - t)
    log(f"  notes: {r['requests_per_s']:.1f}/s over HTTP, {inproc:.1f}/s in-process (one thread)")
    return {"http": r, "in_process_notes_per_s_one_thread": inproc}


def compare_batchers(home: Path, key: str, work: Path, tx_file: Path, workers: int, seconds: int,
                     concurrency: list[int], rounds: int = 3) -> dict[str, Any]:
    """``--batcher thread`` against ``--batcher async``, fairly: both servers up at once (an idle
    one costs nothing), each warmed with the same days, then at each concurrency ``rounds`` rounds
    in which each server in turn gets the same fresh transactions (its own state, so nothing is a
    replay). Sequential parts of one run are not comparable: each sends later transactions than
    the part before, whose histories differ in length (Redis CPU per request fell from ~90 to ~30
    µs between the first and the last part of one run), and this shared machine's speed drifts."""
    forms = ("thread", "async")
    servers = {f: Server(home, args=["--workers", str(workers), "--batcher", f]) for f in forms}
    out: dict[str, Any] = {"rounds": rounds, "seconds_per_run": seconds, "by_concurrency": {}}
    try:
        for srv in servers.values():
            warm(srv.url, key, work / "warm.jsonl")
        offset = 0
        for c in concurrency:
            runs: dict[str, list[dict[str, Any]]] = {f: [] for f in forms}
            for _ in range(rounds):
                sent = 0
                for f in forms:
                    at = [offset]
                    r = finance_single(servers[f].url, key, work, tx_file, at, [c], seconds, servers[f].proc.pid)[0]
                    runs[f].append(r)
                    sent = max(sent, r["requests"])
                offset += sent + 1000
            med = {f: {"tx_per_s": float(sorted(r["requests_per_s"] for r in runs[f])[rounds // 2]),
                       "p99_ms": float(sorted(r["p99_ms"] for r in runs[f])[rounds // 2])} for f in forms}
            out["by_concurrency"][str(c)] = {"runs": runs, "median": med,
                                             "thread_over_async": med["thread"]["tx_per_s"] / med["async"]["tx_per_s"]}
            log(f"  c={c}: thread {med['thread']} async {med['async']}")
    finally:
        for srv in servers.values():
            srv.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "serve_cpu.json")
    parser.add_argument("--seconds", type=int, default=15, help="Length of each wrk run.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", default="16,32,64,128", help="wrk connections, finance single route.")
    parser.add_argument("--skip", default="",
                        help="Comma-separated parts to skip: baseline,lists,manufacturing,notes,fastapi,batcher,granian")
    parser.add_argument("--keep", action="store_true", help="Keep the seeded home (printed).")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("benchmarks/serve.py needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    concurrency = [int(c) for c in args.concurrency.split(",")]
    home = Path(tempfile.mkdtemp(prefix="trillium-serve-bench-"))
    work = home / "bench"
    work.mkdir()
    from trillium.core.runtime.hardware import detect

    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), **detect().as_dict()},
        "load_generator": "wrk (one thread) on the same machine: it shares the cores with the server, its "
                          "workers and Redis",
        "seconds_per_run": args.seconds, "workers": args.workers,
    }
    log(f"seeding {home}")
    key = seed(home)
    tx_file = work / "transactions.jsonl"
    log("simulating 5,000 cards and training the served model on their first 28 days")
    report["data"] = transactions(work, home, n_days=60)
    log(f"transactions: {report['data']}")
    offset = [0]
    server = Server(home, args=["--workers", str(args.workers)])
    try:
        log("warming the online state with 7 days sent as lists")
        report["warm_tx_per_s"] = warm(server.url, key, work / "warm.jsonl")
        log(f"finance, one transaction per request, {args.workers} workers, Redis state, batcher")
        first = offset[0]
        report["finance_single"] = finance_single(server.url, key, work, tx_file, offset, concurrency, args.seconds,
                                                  server.proc.pid)
        if "lists" not in skip:
            log("finance, lists of 1,000")
            report["finance_list"] = finance_lists(server.url, key, work, tx_file, offset[0], 1000, args.seconds)
            offset[0] += int(report["finance_list"]["transactions_per_s"] * args.seconds) + 2000
        if "manufacturing" not in skip:
            log("manufacturing")
            report["manufacturing"] = manufacturing(server.url, key, work, args.seconds, home)
        if "notes" not in skip:
            log("notes")
            report["notes"] = notes(server.url, key, work, args.seconds)
    finally:
        server.stop()
    if "baseline" not in skip:
        log("baseline: one worker, batches of one, in-memory state (warmed the same way)")
        base = Server(home, args=["--workers", "1", "--max-batch", "1", "--fields", "finance"],
                      env={"TRILLIUM_REDIS_URL": ""})
        try:
            warm(base.url, key, work / "warm.jsonl")
            # the same transactions as part 1, at the same concurrencies, on a state warmed the same way
            report["finance_single_baseline"] = finance_single(base.url, key, work, tx_file, [first], concurrency,
                                                               args.seconds)
        finally:
            base.stop()
        best = max(report["finance_single"], key=lambda r: r["requests_per_s"])
        best_base = max(report["finance_single_baseline"], key=lambda r: r["requests_per_s"])
        report["finance_single_ratio"] = best["requests_per_s"] / best_base["requests_per_s"]
    if "fastapi" not in skip:
        best = max(report["finance_single"], key=lambda r: r["requests_per_s"])
        log(f"the score route through FastAPI's own handler (TRILLIUM_SERVE_FAST_ROUTES=0), c={best['connections']}")
        plain = Server(home, args=["--workers", str(args.workers)], env={"TRILLIUM_SERVE_FAST_ROUTES": "0"})
        try:
            warm(plain.url, key, work / "warm.jsonl")
            f = finance_single(plain.url, key, work, tx_file, [best["first_transaction"]], [best["connections"]],
                               args.seconds, plain.proc.pid)[0]
        finally:
            plain.stop()
        report["fast_route_comparison"] = {"fast_route": best, "fastapi_handler": f,
                                           "fast_over_fastapi": best["requests_per_s"] / f["requests_per_s"]}
    if "batcher" not in skip:
        log("the two batcher forms, interleaved: both servers up, the same transactions sent to each in turn")
        report["batcher_comparison"] = compare_batchers(home, key, work, tx_file, args.workers, args.seconds,
                                                        [c for c in (32, 64) if c in concurrency] or concurrency[:1])
    if "granian" not in skip:
        best = max(report["finance_single"], key=lambda r: r["requests_per_s"])
        log(f"the same application under granian ({args.workers} workers), c={best['connections']}")
        gran = Server(home, args=[], granian_workers=args.workers)
        try:
            warm(gran.url, key, work / "warm.jsonl")
            g = finance_single(gran.url, key, work, tx_file, [best["first_transaction"]], [best["connections"]],
                               args.seconds)[0]
        finally:
            gran.stop()
        report["server_comparison"] = {"uvicorn": best, "granian": g,
                                       "granian_over_uvicorn": g["requests_per_s"] / best["requests_per_s"]}
    within = [r for r in report["finance_single"] if r["p99_ms"] is not None and r["p99_ms"] <= 45 and not r["non_2xx"]]
    report["goals"] = {
        "finance_single_tx_per_s_at_p99_le_45ms": max((r["requests_per_s"] for r in within), default=0.0),
        "finance_single_goal": 2800,
        "finance_list_tx_per_s": report.get("finance_list", {}).get("transactions_per_s"),
        "finance_list_goal": 50000,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report["goals"], indent=1))
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    else:
        log(f"kept {home}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
