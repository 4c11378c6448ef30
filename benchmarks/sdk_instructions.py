"""Where our cost goes under uvicorn, in CPU instructions: repeatable where requests/s is not.

Run:  .venv/bin/python benchmarks/sdk_instructions.py            (about 7 minutes)
      .venv/bin/python benchmarks/sdk_instructions.py 8000       (more measured requests)

Needs valgrind (Debian: apt-get install valgrind). The app server of
``sdk_overhead.py uvicorn`` (minimal Starlette app, httptools + uvloop) runs under
``valgrind --tool=callgrind`` once per variant; the lean client and the stub ingest
server run natively. After a warm-up, callgrind's counters are zeroed, N requests are
served, and the instructions the server process executed are divided by the requests.
Two things would make that count depend on timing, and both are taken out:

- batches go out by size (500): before zeroing and before dumping, the run waits until
  the stub holds every full batch, so the window holds a whole number of them;
- the event loop's and the sender's timers run whatever the load: their instructions per
  second are measured on the idle server after the window and subtracted for its length.

PYTHONHASHSEED is fixed: across seeds, dict layouts move every variant by up to a few
thousand instructions per request. Instructions are not time: a cache miss costs no
instruction, and zlib runs more instructions per µs than the interpreter.

Variants: the bare app; ``observer`` (a layer that only wraps send, records nothing:
the floor of any request telemetry); ours with telemetry off (no API key); ours
recording but not delivering (batches larger than the run); ours delivering without
gzip; ours with the pure-Python request path (MALTI_SPEEDUPS=0, as where the C
extension cannot be built); ours as installed.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import sdk_overhead as bench  # noqa: E402  (its app, stub server, client and helpers)

BATCH = 500  # the default batch size, set explicitly
WARM_UP = 3 * BATCH
IDLE = 4.0  # seconds of idle server after each window: the timers' instructions per second
VARIANTS = [
    ("bare", "bare", {}),
    ("observer", "observer", {}),
    ("ours, telemetry off", "ours", {"MALTI_API_KEY": ""}),
    ("ours, recording only", "ours", {"MALTI_BATCH_SIZE": "1000000000", "MALTI_BUFFER_SIZE": "100000000"}),
    ("ours, no gzip", "ours", {"MALTI_GZIP": "false"}),
    ("ours, pure Python", "ours", {"MALTI_SPEEDUPS": "0"}),
    ("ours", "ours", {}),
]
STAGES = [
    ("observer", "bare", "the observer reference (wraps send, records nothing)"),
    ("ours, recording only", "observer", "our layer and recording, beyond the observer"),
    ("ours", "ours, recording only", "delivery: batches, JSON, gzip, POSTs"),
    ("ours", "ours, no gzip", "  of which gzip"),
    ("ours", "bare", "ours in all"),
    ("ours, telemetry off", "bare", "(ours with telemetry off: every request asks the settings)"),
    ("ours, pure Python", "bare", "(ours in pure Python: MALTI_SPEEDUPS=0, or no C compiler)"),
]

#: the lean client of sdk_overhead, stopping after a number of answers instead of a time
COUNTING_CLIENT = bench.LEAN_CLIENT.replace(
    "port, seconds, inflight = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])",
    "port, left, inflight = int(sys.argv[1]), [int(sys.argv[2])], int(sys.argv[3])\nseconds = 0",
).replace(
    "if time.perf_counter() < self.stop_at:",
    "left[0] -= 1\n            if left[0] > 0:",
)


def _dump(pid: int, out: Path) -> int:
    """Dump callgrind's counters now; the instructions counted since the last zero or dump."""
    before = set(glob.glob(f"{out}.*"))
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    for _ in range(1200):
        dumps = set(glob.glob(f"{out}.*")) - before
        if dumps:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("callgrind wrote no dump")
    for _ in range(100):  # the summary line is in the header, written first
        found = re.search(r"^summary: (\d+)", Path(next(iter(dumps))).read_text(), re.M)
        if found:
            return int(found.group(1))
        time.sleep(0.1)
    raise RuntimeError("callgrind's dump has no summary")


def instructions_per_request(workdir: str, variant: str, env: dict, requests: int, stub_port: int) -> float:
    """Instructions per request of one variant, less the clock-driven work of an idle server.

    Batches go out by size: the measured window holds a whole number of them, because
    the run waits, before zeroing and before dumping, until the stub has every full
    batch. The loop's and the sender's timers run whatever the load; their rate is
    measured on the idle server right after, and subtracted for the window's length.
    """
    port = bench.free_port()
    out = Path(tempfile.mkdtemp(dir=workdir), "callgrind.out")
    delivers = variant == "ours" and env.get("MALTI_API_KEY") and env.get("MALTI_BATCH_SIZE") == str(BATCH)
    process = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, "-m", "uvicorn", "bench_app:app", "--port", str(port), "--log-level", "warning",
            "--no-access-log", *bench.UVICORN_STACKS["httptools+uvloop"],
        ],
        cwd=workdir,
        env={**env, "BENCH_VARIANT": variant},
        stderr=subprocess.DEVNULL,
    )
    try:
        bench.wait_port(port, 300)
        received_before = bench.stub_count(stub_port)
        served_in_all = 0

        def serve(count: int) -> int:
            nonlocal served_in_all
            answer = subprocess.run(
                [sys.executable, "-c", COUNTING_CLIENT, str(port), str(count), "8"],
                check=True, capture_output=True, text=True,
            )
            served, bad = map(int, answer.stdout.split())
            if bad:
                raise RuntimeError(f"{variant}: {bad} answers were not 200")
            served_in_all += served
            if delivers:  # every full batch at the stub
                full = served_in_all // BATCH * BATCH
                for _ in range(1200):
                    if bench.stub_count(stub_port) - received_before >= full:
                        break
                    time.sleep(0.1)
                else:
                    raise RuntimeError(f"{variant}: the stub did not receive {full} records")
            return served

        serve(WARM_UP)
        subprocess.run(["callgrind_control", "--zero", str(process.pid)], check=True, capture_output=True)
        started = time.monotonic()
        served = serve(requests)
        loaded = _dump(process.pid, out)
        window = time.monotonic() - started
        time.sleep(IDLE)
        idle = _dump(process.pid, out) / (time.monotonic() - started - window)
        return (loaded - idle * window) / served
    finally:
        bench.stop_process(process)


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        sys.exit("needs valgrind (Debian: apt-get install valgrind)")
    print(
        f"\n== instructions per request under uvicorn (httptools+uvloop, minimal Starlette app, callgrind,"
        f" {requests} requests after {WARM_UP} of warm-up, 8 in flight, PYTHONHASHSEED=0)"
    )
    with tempfile.TemporaryDirectory() as workdir:
        Path(workdir, "bench_app.py").write_text(bench.APP_MODULE)
        Path(workdir, "stub_ingest.py").write_text(bench.STUB_INGEST)
        stub_port = bench.free_port()
        stub = bench.start_uvicorn(workdir, "stub_ingest", stub_port, {})
        base_env = {
            **os.environ,
            "PYTHONPATH": f"{workdir}:{ROOT}",
            "PYTHONHASHSEED": "0",
            "MALTI_API_KEY": "bench",
            "MALTI_URL": f"http://127.0.0.1:{stub_port}",
            "MALTI_SERVICE_NAME": "bench",
            "MALTI_BATCH_SIZE": str(BATCH),
            "MALTI_BATCH_INTERVAL": "600",  # batches by size, as under load (requests are slow under valgrind)
        }
        counts: dict[str, float] = {}
        try:
            for name, variant, overrides in VARIANTS:
                counts[name] = instructions_per_request(workdir, variant, {**base_env, **overrides}, requests, stub_port)
                print(f"  {name:24} {counts[name]:9,.0f} instructions per request", flush=True)
        finally:
            bench.stop_process(stub)
    print("  stage                                                  instructions per request")
    for this, reference, label in STAGES:
        print(f"    {label:52} {counts[this] - counts[reference]:+8,.0f}")
    observer = counts["observer"] - counts["bare"]
    ours = counts["ours"] - counts["bare"]
    print(f"  ours adds {ours / counts['bare']:.1%} to the bare app's instructions, the observer {observer / counts['bare']:.1%}")


if __name__ == "__main__":
    main()
