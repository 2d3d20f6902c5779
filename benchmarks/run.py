"""Benchmarks: our JobManager against hand-written docker-py and the docker CLI, side by side.

One run, the same two private engines, image, command, container options (limits and
hardening) and N for every contender. Each measurement runs in a fresh Python process, so that
the client CPU per job and the peak RSS count exactly the contender's processes: for ours, the
process that runs the JobManager plus every process it starts (submitters, waiters,
forkserver); for raw docker-py, its one process.

Prints a table (jobs/s, p50/p95 latency, ratios against the best raw docker-py at the same
concurrency K, client CPU per job, peak RSS), with the latency run (one job at a time, 0.5 s
between jobs, a trivial job and a grader that boots 0.3 s, warm starts off and on), then the
scale run (a burst of 100 and of 1000 trivial jobs on two
engines of 4 slots each), and writes ``benchmarks/results/results.json``,
``benchmarks/results/results.rst`` (the table as a Sphinx ``list-table``, for the docs),
``plot-throughput.png`` and ``plot-latency.png`` (when matplotlib is installed: ``pip
install -e .[bench]``).

    python benchmarks/run.py            # N=40, K in 1 2 4 8, trivial and 1-second jobs, 2 repeats
    python benchmarks/run.py --quick    # N=20, K in 1 4, trivial jobs, 1 repeat, scale 100/300
    python benchmarks/run.py --only latency --repeats 3   # sections: compare, latency, scale
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "scripts"))

from backend.ipc._child import proc_stat

IMAGE = "backend-test-busybox"
JOBS = {"trivial": "read line; echo '{\"result\": \"success\"}'",
        "1s": "read line; sleep 1; echo '{\"result\": \"success\"}'",
        # a grader that boots (an interpreter, a JVM) before it reads its input
        "boot": "sleep 0.3; read line; echo '{\"result\": \"success\"}'"}
#: Seconds between two jobs of the latency run (a user's rhythm).
PAUSE = 0.5
LIMITS = {"time": 10, "memory": 100}


# -- measuring our processes ---------------------------------------------------------------

def _tree(root_pid: int):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = {root_pid}, [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _usage(pids):
    """CPU seconds (with those of reaped children), RSS and PSS (shared pages split between
    sharers) summed over ``pids``."""
    cpu, rss, pss = 0.0, 0, 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = proc_stat(pid)
        if fields is None:
            continue
        try:
            cpu += sum(int(value) for value in fields[11:15]) / tick
            with open(f"/proc/{pid}/smaps_rollup") as stream:
                for line in stream:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return cpu, rss, pss


def _machine_cpu():
    """CPU seconds the whole machine spent busy (engines included), from /proc/stat."""
    with open("/proc/stat") as stream:
        ticks = [int(value) for value in stream.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Client CPU, peak RSS and peak PSS of this process and all its descendants, sampled
    every 0.1 s, and the machine's CPU; the sampling thread's own CPU is left out of both
    CPU figures. ``cpu`` and ``machine_cpu`` are set by :meth:`finish`."""

    def __init__(self):
        self.peak_rss = self.peak_pss = 0
        self.stop = threading.Event()
        self.cpu = self.machine_cpu = 0.0
        self.own_cpu = 0.0
        self.startup_cpu = None  # ours: the manager's start, measured apart

    def sample(self):
        cpu, rss, pss = _usage(_tree(os.getpid()))
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        return cpu

    def __enter__(self):
        self.start_machine = _machine_cpu()
        self.start_cpu = self.sample()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self):
        while not self.stop.wait(0.1):
            before = time.thread_time()
            self.sample()
            self.own_cpu += time.thread_time() - before

    def finish(self):
        """CPU seconds used since the start (call before our children exit)."""
        before = time.thread_time()
        used = self.sample() - self.start_cpu
        self.stop.set()
        self.thread.join()
        own = self.own_cpu + time.thread_time() - before
        self.machine_cpu = _machine_cpu() - self.start_machine - own
        self.cpu = used - own
        return self.cpu

    def __exit__(self, *exc):
        self.stop.set()


# -- contenders (each runs in its own fresh process; engines are given by URL) -----------

def _instances(urls, k, warm=False):
    per_engine = [k // 2 + (1 if i < k % 2 else 0) for i in range(2)]
    return [{"server_url": url, "name": f"e{i + 1}", "max_concurrent_jobs": slots,
             "warm_containers": int(warm)}
            for i, (url, slots) in enumerate(zip(urls, per_engine)) if slots]


def run_ours(urls, script, n, k, sync=False, warm=False, pause=0.0):
    from backend import JobManager, JobManagerSync, Task

    task = Task(IMAGE, command=["sh", "-c", script], limits=LIMITS)
    latencies, lock, done = [], threading.Lock(), threading.Event()
    with Meter() as startup:
        manager = JobManager(_instances(urls, k, warm), process_pool_size=4)
        _warm_up(manager, task)
        startup.finish()
    with Meter() as meter:
        try:
            started = time.perf_counter()
            if sync:
                runner, served_warm = JobManagerSync(manager), 0
                for i in range(n):
                    time.sleep(pause)  # a user's rhythm (none: back to back)
                    t0 = time.perf_counter()
                    result = runner.new_job(task, i, timeout=120)
                    assert result["result"] == "success", result
                    served_warm += bool(result["run"].get("warm"))
                    latencies.append(time.perf_counter() - t0)
            else:
                submitted = {}

                def callback(job_id, task, result):
                    assert result["result"] == "success", result
                    with lock:
                        latencies.append(time.perf_counter() - submitted[job_id])
                        if len(latencies) == n:
                            done.set()

                with lock:
                    for i in range(n):
                        submitted[manager.new_job(task, i, callback)] = time.perf_counter()
                    meter.sample()  # every job queued: the peak of held inputs
                if not done.wait(1800):
                    raise RuntimeError(f"only {len(latencies)} of {n} jobs ended")
            elapsed = time.perf_counter() - started
            meter.finish()
            meter.warm = served_warm if sync else sum(
                e["warm_hits"] for e in manager.stats()["engines"].values())
        finally:
            manager.close()
    meter.startup_cpu = startup.cpu
    meter.peak_rss = max(meter.peak_rss, startup.peak_rss)
    meter.peak_pss = max(meter.peak_pss, startup.peak_pss)
    return elapsed, latencies, meter


def _warm_up(manager, task):
    """One job per engine slot, so that every child process has started and connected."""
    from backend import JobManagerBuffer

    buffer = JobManagerBuffer(manager)
    buffer.new_jobs([(task, "warm-up")] * 8)
    for _, result in buffer.as_completed(timeout=120):
        assert result["result"] == "success", result


def _container_config(script, i):
    """The very create body our JobManager sends (limits, hardening, labels aside)."""
    from backend import docker as _docker
    from backend.model._config import parse_instances
    from backend.ipc._messages import JobSpec
    from backend.model._task import Task, snapshot_task

    [instance] = parse_instances([{"server_url": "unix:///unused.sock"}])
    spec = JobSpec(str(i), snapshot_task(Task(IMAGE, command=["sh", "-c", script],
                                               limits=LIMITS), None), b"")
    config = _docker.container_options(spec, instance, "bench", "bench")
    config.pop("Labels")
    return config


def _raw_job(client, config, i):
    """Hand-written docker-py done well: create with stdin, attach, start, write, wait,
    logs, remove."""
    container = client.create_container_from_config(config)["Id"]
    stdin = client.attach_socket(container, params={"stdin": 1, "stream": 1})
    client.start(container)
    raw = getattr(stdin, "_sock", stdin)
    raw.sendall(json.dumps({"input": i}).encode() + b"\n")
    raw.close()
    stdin.close()
    client.wait(container)
    out = client.logs(container, stdout=True, stderr=False)
    client.remove_container(container, force=True)
    assert json.loads(out)["result"] == "success"


def _client(url):
    import docker
    return docker.APIClient(base_url=url, version="1.41")


def _in_threads(job, n, k):
    """Runs ``job(i)`` (which returns its end time) for N jobs in K threads. Latency counts
    from submission, as for the JobManager, whose jobs are all submitted at once."""
    with Meter() as meter:
        started = time.perf_counter()
        with ThreadPoolExecutor(k) as pool:
            ends = list(pool.map(job, range(n)))
        elapsed = time.perf_counter() - started
        meter.finish()
    return elapsed, [end - started for end in ends], meter


def run_raw(urls, script, n, k):
    local = threading.local()
    config = _container_config(script, 0)
    _raw_job(_client(urls[0]), config, 0)  # warm-up, as for the others

    def job(i):
        if not hasattr(local, "clients"):
            local.clients = [_client(url) for url in urls]
        _raw_job(local.clients[i % 2], config, i)
        return time.perf_counter()

    return _in_threads(job, n, k)


def run_raw_sequential(urls, script, n, k, pause=0.0):
    """One raw docker-py job at a time; latency of each job alone (to compare with
    JobManagerSync)."""
    clients = [_client(url) for url in urls]
    config = _container_config(script, 0)
    for i, client in enumerate(clients):
        _raw_job(client, config, i)  # warm-up, as for the others
    latencies = []
    with Meter() as meter:
        started = time.perf_counter()
        for i in range(n):
            time.sleep(pause)
            t0 = time.perf_counter()
            _raw_job(clients[i % 2], config, i)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        meter.finish()
    return elapsed, latencies, meter


def run_cli(urls, script, n, k):
    docker_cli = shutil.which("docker")

    def job(i):
        done = subprocess.run([docker_cli, "-H", urls[i % 2], "run", "--rm", "-i",
                               "--network", "none", "--init", "--memory", "100m",
                               "--memory-swap", "100m", "--pids-limit", "64", "--cpus", "1",
                               "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                               "--log-driver", "local", IMAGE, "sh", "-c", script],
                              input=json.dumps({"input": i}) + "\n",
                              capture_output=True, text=True, timeout=120)
        assert json.loads(done.stdout)["result"] == "success", done.stderr
        return time.perf_counter()

    return _in_threads(job, n, k)


CONTENDERS = {"ours": run_ours, "ours-warm": lambda *a: run_ours(*a, warm=True),
              "ours-sync": lambda *a: run_ours(*a, sync=True),
              "raw": run_raw, "raw-seq": run_raw_sequential, "cli": run_cli,
              # the latency run: one job at a time, PAUSE between jobs
              "raw-seq-paused": lambda *a: run_raw_sequential(*a, pause=PAUSE),
              "ours-sync-paused": lambda *a: run_ours(*a, sync=True, pause=PAUSE),
              "ours-sync-warm": lambda *a: run_ours(*a, sync=True, warm=True, pause=PAUSE)}
#: Each contender's reference: raw docker-py at the same K (one at a time for ours-sync).
REFERENCE = {"ours-sync": "raw-seq", "ours-sync-paused": "raw-seq-paused",
             "ours-sync-warm": "raw-seq-paused", "raw-seq": "raw-seq",
             "raw-seq-paused": "raw-seq-paused"}


def run_isolated(urls, contender, kind, n, k):
    """Runs one measurement in a fresh Python process; returns its figures."""
    command = [sys.executable, str(Path(__file__).resolve()), "--one", contender,
               "--kind", kind, "--n", str(n), "--k", str(k), "--urls", *urls]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{contender} {kind} N={n} K={k} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_one(args):
    """``--one``: measure one contender here and print the figures as JSON."""
    elapsed, latencies, meter = CONTENDERS[args.one](args.urls, JOBS[args.kind], args.n,
                                                     args.k)
    print(json.dumps({"elapsed": elapsed, "latencies": latencies, "cpu": meter.cpu,
                      "rss": meter.peak_rss, "pss": meter.peak_pss,
                      "machine_cpu": meter.machine_cpu, "startup_cpu": meter.startup_cpu,
                      "warm": getattr(meter, "warm", None)}))


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(fraction * (len(values) - 1))))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default="/tmp/djm-bench")
    parser.add_argument("--only", choices=["compare", "latency", "scale"], action="append",
                        help="run only the side-by-side comparison, the latency run (one "
                        "job at a time, a pause between jobs) or the scale run; repeatable")
    parser.add_argument("--repeats", type=int, help="repeats of each measurement")
    parser.add_argument("--ks", type=int, nargs="+", help="the concurrencies K compared")
    parser.add_argument("--out", default=str(HERE / "results"),
                        help="the folder of results.json, results.txt, results.rst and the plots")
    parser.add_argument("--report", metavar="RESULTS_JSON",
                        help="print the tables and draw the plot again from a results.json")
    parser.add_argument("--one", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="trivial", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=40, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--urls", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return run_one(args)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        return report(saved["rows"], saved.get("scale", ()), Path(args.out))
    from engines import PrivateEngine, build_busybox_image

    n, ks, kinds, repeats = (20, [1, 4], ["trivial"], 1) if args.quick else \
        (40, [1, 2, 4, 8], ["trivial", "1s"], 2)
    scale_sizes = (100, 300) if args.quick else (100, 1000)
    repeats = args.repeats or repeats
    ks = args.ks or ks
    engines = [PrivateEngine(name, Path(args.root) / name) for name in ("e1", "e2")]
    for engine in engines:
        engine.start()
        build_busybox_image(engine.url, IMAGE)
    urls = [engine.url for engine in engines]
    rows, scale = [], []
    sections = set(args.only or ["compare", "latency", "scale"])
    try:
        if "compare" in sections:
            # repeats go round all contenders in turn, so that a machine that drifts (they
            # do, by some 10 %) weighs on every contender alike, and in balanced orders: a
            # run right after one of ours was the slower in most pairs, so each contender
            # comes right after each other one equally often (not always after the same one)
            names = ("raw", "ours", "ours-warm", "raw-seq", "ours-sync", "cli")
            for kind in kinds:
                for k in ks:
                    here = [name for name in names
                            if not (name in ("ours-sync", "raw-seq") and k != 1
                                    or name == "ours-warm" and k != 4)]
                    orders = balanced_orders(here)
                    for repeat in range(repeats):
                        for name in orders[repeat % len(orders)]:
                            out = run_isolated(urls, name, kind, n, k)
                            rows.append(_row(kind, k, name, repeat, n, out))
                            print(f"{kind:8} K={k} {name:9} #{repeat}: "
                                  f"{rows[-1]['jobs_per_s']:6.2f} jobs/s", flush=True)
        if "latency" in sections:
            for kind in ("trivial", "boot"):
                orders = balanced_orders(("raw-seq-paused", "ours-sync-paused",
                                          "ours-sync-warm"))
                for repeat in range(repeats):
                    for name in orders[repeat % len(orders)]:
                        out = run_isolated(urls, name, kind, n // 2, 1)
                        rows.append(_row(kind, 1, name, repeat, n // 2, out))
                        print(f"{kind:8} {name:16} #{repeat}: p50 "
                              f"{1000 * rows[-1]['p50']:6.1f} ms", flush=True)
        if "scale" in sections:
            for size in scale_sizes:
                out = run_isolated(urls, "ours", "trivial", size, 8)
                scale.append(_row("trivial", 8, "ours", 0, size, out))
                print(f"scale    N={size}: {scale[-1]['jobs_per_s']:6.2f} jobs/s", flush=True)
    finally:
        for engine in engines:
            engine.stop()
    report(rows, scale, Path(args.out))


def balanced_orders(names):
    """Orders of ``names``, one per repeat in turn, in which each name comes right after
    each other name equally often over a full round (a Williams design: ``len(names)``
    orders, twice as many for an odd count)."""
    count, first = len(names), [0]
    low, high = 1, count - 1
    while len(first) < count:
        first.append(low)
        low += 1
        if len(first) < count:
            first.append(high)
            high -= 1
    rows = [[(i + shift) % count for i in first] for shift in range(count)]
    if count % 2:
        rows += [row[::-1] for row in rows]
    return [[names[i] for i in row] for row in rows]


def _row(kind, k, name, repeat, n, out):
    latencies = out["latencies"]
    return {"kind": kind, "k": k, "contender": name, "repeat": repeat, "n": n,
            "jobs_per_s": n / out["elapsed"], "p50": statistics.median(latencies),
            "p95": percentile(latencies, 0.95), "cpu_ms_per_job": 1000 * out["cpu"] / n,
            "peak_rss_mib": out["rss"] / 2 ** 20, "peak_pss_mib": out["pss"] / 2 ** 20,
            "machine_cpu_ms_per_job": 1000 * out["machine_cpu"] / n, "startup_cpu_ms": (
                None if out.get("startup_cpu") is None else 1000 * out["startup_cpu"]),
            "served_warm": out.get("warm")}


def _list_table(cells):
    """The comparison as a Sphinx ``list-table`` (the docs include it beside the plot)."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in cells:
        lines += [f"   {'*' if i == 0 else ' '} - {cell}" for i, cell in enumerate(row)]
    return "\n".join(lines) + "\n"


def _paired_ratios(rows):
    """Each contender's throughput against raw docker-py's *in the same repeat*, and their
    median: the machine drifts between repeats (by 30 % in some runs), so a ratio of bests
    may compare two moments of it."""
    by = {(r["kind"], r["k"], r["contender"], r["repeat"]): r for r in rows}
    lines = []
    for kind, k, name in sorted({(r["kind"], r["k"], r["contender"]) for r in rows}):
        reference = REFERENCE.get(name, "raw")
        if name == reference or name.endswith("-paused") or name == "ours-sync-warm":
            continue
        ratios = [by[(kind, k, name, rep)]["jobs_per_s"] / by[(kind, k, reference, rep)][
            "jobs_per_s"] for (kd, kk, n, rep) in by if (kd, kk, n) == (kind, k, name)
            and (kind, k, reference, rep) in by]
        if len(ratios) >= 2:
            lines.append(f"{kind:8} K={k} {name:9} xput/{reference} per repeat: "
                         + " ".join(f"{r:.2f}" for r in ratios)
                         + f" (median {statistics.median(ratios):.2f})")
    return ["\nthroughput against raw in the same repeat:"] + lines if lines else []


def report(rows, scale=(), out=HERE / "results"):
    """Prints the tables, writes results.json and, with matplotlib, the two plots."""
    best = {}
    for row in rows:
        key = (row["kind"], row["k"], row["contender"])
        if key not in best or row["jobs_per_s"] > best[key]["jobs_per_s"]:
            best[key] = row
    lines = [f"{'kind':8} {'K':>2} {'contender':16} {'jobs/s':>6} {'p50 ms':>6} {'p95 ms':>6} "
             f"{'xput/raw':>8} {'p50/raw':>7} {'CPU ms/job':>10} {'RSS MiB':>7} {'PSS MiB':>7} "
             f"{'machine ms/job':>14}"]
    cells = [["kind", "K", "contender", "jobs/s", "p50 ms", "p95 ms", "xput/raw", "p50/raw",
              "CPU ms/job", "RSS MiB", "PSS MiB", "machine ms/job"]]
    for (kind, k, name), row in sorted(best.items()):
        raw = best.get((kind, k, REFERENCE.get(name, "raw")))
        ratio = row["jobs_per_s"] / raw["jobs_per_s"] if raw else float("nan")
        p50 = row["p50"] / raw["p50"] if raw else float("nan")
        lines.append(f"{kind:8} {k:>2} {name:16} {row['jobs_per_s']:6.2f} "
                     f"{1000 * row['p50']:6.0f} {1000 * row['p95']:6.0f} {ratio:8.2f} "
                     f"{p50:7.2f} {row['cpu_ms_per_job']:10.1f} {row['peak_rss_mib']:7.1f} "
                     f"{row['peak_pss_mib']:7.1f} {row['machine_cpu_ms_per_job']:14.1f}")
        cells.append([kind, k, name, f"{row['jobs_per_s']:.2f}", f"{1000 * row['p50']:.0f}",
                      f"{1000 * row['p95']:.0f}", f"{ratio:.2f}", f"{p50:.2f}",
                      f"{row['cpu_ms_per_job']:.1f}", f"{row['peak_rss_mib']:.1f}",
                      f"{row['peak_pss_mib']:.1f}", f"{row['machine_cpu_ms_per_job']:.1f}"])
    lines += _paired_ratios(rows)
    startups = [r["startup_cpu_ms"] for r in rows if r.get("startup_cpu_ms") is not None]
    if startups:
        lines.append(f"\nours: start-up (manager, children, one job per slot) "
                     f"{statistics.median(startups):.0f} ms of CPU, not counted above")
    if scale:
        lines.append(f"\nscale: a burst of N trivial jobs, 2 engines x 4 slots\n"
                     f"{'N':>5} {'jobs/s':>7} {'CPU ms/job':>10} {'peak RSS MiB':>12} "
                     f"{'peak PSS MiB':>12}")
        for row in scale:
            lines.append(f"{row['n']:>5} {row['jobs_per_s']:7.2f} {row['cpu_ms_per_job']:10.1f} "
                         f"{row['peak_rss_mib']:12.1f} {row['peak_pss_mib']:12.1f}")
        if len(scale) >= 2:
            lines.append(f"CPU per job at N={scale[-1]['n']} / at N={scale[0]['n']}: "
                         f"{scale[-1]['cpu_ms_per_job'] / scale[0]['cpu_ms_per_job']:.2f}; "
                         f"peak RSS grew by "
                         f"{scale[-1]['peak_rss_mib'] - scale[0]['peak_rss_mib']:.1f} MiB")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": rows, "scale": list(scale)},
                                                 indent=1))
    (out / "results.txt").write_text(text)
    (out / "results.rst").write_text(_list_table(cells))
    if not rows:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("\n(matplotlib not installed: no plot)")
        return
    # two figures of 480 px at 100 dpi: side by side in the docs at 1280 px, one above the
    # other on a phone, with type legible in both
    plt.rcParams.update({"font.size": 12, "legend.fontsize": 11})
    (throughput, left), (latency, right) = (plt.subplots(figsize=(4.8, 4.4)) for _ in "ab")
    styles = {"trivial": "-", "1s": "--"}
    colours = {"ours": "tab:blue", "raw": "tab:orange", "cli": "tab:green"}
    for (kind, name) in sorted({(r["kind"], r["contender"]) for r in rows}):
        points = sorted((k, row) for (kd, k, n), row in best.items() if kd == kind and n == name)
        if len(points) < 2:
            continue  # the sequential contenders have K=1 only: see the table
        ks = [k for k, _ in points]
        style = dict(linestyle=styles.get(kind, "-"), marker="o", color=colours.get(name),
                     label=f"{name} ({kind} jobs)")
        left.plot(ks, [r["jobs_per_s"] for _, r in points], **style)
        right.plot(ks, [1000 * r["p50"] for _, r in points], **style)
    left.set(xlabel="K (concurrent jobs)", ylabel="jobs/s", title="Throughput")
    right.set(xlabel="K (concurrent jobs)", ylabel="p50 latency from submission (ms)",
              title="Latency", yscale="log")
    all_ks = sorted({k for (_, k, _) in best})
    for axes in (left, right):
        axes.set_xticks(all_ks)  # K is a whole number: no 1.5
    left.legend(loc="upper left")  # the latency's lines cross every corner: same colours
    # plain milliseconds on the log axis, not powers of ten
    right.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    right.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    for figure, name in ((throughput, "plot-throughput.png"), (latency, "plot-latency.png")):
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
    print(f"\nwrote {out / 'results.json'}, {out / 'plot-throughput.png'} and "
          f"{out / 'plot-latency.png'}")

if __name__ == "__main__":
    main()
