"""Benchmark: a raw job's added cost (docs/running-programs.rst) over the same job in the JSON
protocol.

One run, one JobManager on two private engines, the same image, limits and work: the JSON
job reads its line and prints a JSON object; the raw job reads its stdin and prints a line;
the raw job with files gets three small files written into its working directory through
the engine's archive API before its start (and reads them), and so does the JSON job with
files (the same files, the same reads: the protocol is all that differs). Jobs run one at a time
(``JobManagerSync``), the variants interleaved round after round, so that a machine that
drifts weighs on each alike. Prints the median and p95 latency of each variant and the
ratio of each to the JSON job's median; the goal is an added cost under 10 %. Two added costs
are printed: the raw job with files over the JSON job without (the files' writing counted as
the raw job's cost) and over the JSON job with the same files (the protocol's cost alone).

    python benchmarks/raw.py                       # N=40 rounds, engines under --root
    python benchmarks/raw.py --urls URL1 URL2      # engines already running
    python benchmarks/raw.py --urls ... --out raw-podman.json   # another engine kind
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "scripts"))

IMAGE = "backend-test-busybox"
LIMITS = {"time": 10, "memory": 100}
FILES = {"main.sh": "cat a.txt b.txt > /dev/null\n", "a.txt": "1 2\n" * 64,
         "data/b.txt": b"\x00\x01" * 512}


def variants():
    from backend import Task

    return {
        "json": (Task(IMAGE, command=["sh", "-c", "read line; echo '{\"result\": \"success\"}'"],
                      limits=LIMITS), 1, None),
        "raw": (Task(IMAGE, command=["sh", "-c", "cat > /dev/null; echo ok"], limits=LIMITS,
                     protocol="raw"), "1 2\n", None),
        "raw+files": (Task(IMAGE, command=["sh", "-c", "cat > /dev/null; sh main.sh; echo ok"],
                           limits=LIMITS, protocol="raw"), "1 2\n", FILES),
        "json+files": (Task(IMAGE, command=["sh", "-c", "read line; sh main.sh; "
                                            "echo '{\"result\": \"success\"}'"],
                            limits=LIMITS), 1, FILES),
    }


def measure(urls, rounds):
    from backend import JobManager, JobManagerSync

    instances = [{"server_url": url, "name": f"e{i + 1}"} for i, url in enumerate(urls)]
    latencies = {name: [] for name in variants()}
    with JobManager(instances, process_pool_size=2) as manager:
        runner = JobManagerSync(manager)
        jobs = variants()
        for name, (task, inputdata, files) in jobs.items():  # warm-up: children connected
            for _ in range(4):
                assert runner.new_job(task, inputdata, timeout=60, files=files)["result"] \
                    == "success"
        for _ in range(rounds):
            for name, (task, inputdata, files) in jobs.items():
                started = time.perf_counter()
                result = runner.new_job(task, inputdata, timeout=60, files=files)
                latencies[name].append(time.perf_counter() - started)
                assert result["result"] == "success", result
    return latencies


def report(latencies):
    base = statistics.median(latencies["json"])
    rows = {}
    print(f"{'variant':10} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'vs json p50':>12}")
    for name, values in latencies.items():
        values = sorted(values)
        p50 = statistics.median(values)
        p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
        mean = statistics.fmean(values)  # where latencies fall in groups (Podman's do)
        rows[name] = {"p50": p50, "p95": p95, "mean": mean, "ratio": p50 / base,
                      "n": len(values)}
        print(f"{name:10} {p50 * 1000:8.1f} {p95 * 1000:8.1f} {mean * 1000:8.1f} "
              f"{p50 / base:11.3f}x")
    for base_name in ("json", "json+files"):
        added = rows["raw+files"]["p50"] / rows[base_name]["p50"] - 1
        print(f"added cost of a raw job with 3 files over {base_name}: {added * 100:+.1f} % "
              f"({'met' if added < 0.10 else 'NOT met'}: goal < 10 %)")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--root", default="/tmp/djm-bench")
    parser.add_argument("--urls", nargs="*", help="engines already running (with the image)")
    parser.add_argument("--out", default="raw.json",
                        help="file name under benchmarks/results (one per engine kind)")
    args = parser.parse_args(argv)
    engines = []
    urls = args.urls
    if not urls:
        from engines import PrivateEngine, build_busybox_image

        engines = [PrivateEngine(name, Path(args.root) / name) for name in ("e1", "e2")]
        for engine in engines:
            engine.start()
            build_busybox_image(engine.url, IMAGE)
        urls = [engine.url for engine in engines]
    try:
        rows = report(measure(urls, args.rounds))
    finally:
        for engine in engines:
            engine.stop()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
