"""Command line interface: ``python -m backend demo`` and ``python -m backend run``.

``demo`` grades about forty submissions of a small shell exercise over one or two Docker
engines and prints a summary; ``run`` runs one job and prints its result as JSON. This module is
the only place of the package that writes to stdout.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger("backend.cli")

DEFAULT_URL = "unix:///var/run/docker.sock"
BUSYBOX_IMAGE = "backend-test-busybox"
DEMO_ENGINES_ROOT = "/tmp/djm-demo"
DEMO_PREFIX = "djm-demo-"
#: Exit codes of ``run`` by result status.
EXIT_CODES = {"success": 0, "failed": 1, "error": 1, "timeout": 2, "overflow": 2,
              "crash": 3, "killed": 3}
STATUS_ORDER = ("success", "failed", "error", "timeout", "overflow", "crash", "killed")

_REPO = Path(__file__).resolve().parent.parent


class CliError(Exception):
    """An error reported as one line on stderr."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr."""

    def error(self, message):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- engines -------------------------------------------------------------------------------

def _answers(url: str, timeout: float = 3.0) -> bool:
    """Whether the engine at ``url`` answers a ping."""
    import docker
    try:
        with docker.APIClient(base_url=url, timeout=timeout, version="auto") as client:
            return bool(client.ping())
    except Exception:  # any failure means: not usable
        return False


def _load_engines_module():
    """``scripts/engines.py`` of the source checkout, or ``None`` (installed package)."""
    path = _REPO / "scripts" / "engines.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_backend_engines", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and the like look the module up
    spec.loader.exec_module(module)
    return module


def _find_engines(count: int) -> Tuple[List[Tuple[str, str]], Callable[[], None]]:
    """Engines to use: ``[(name, url)]`` and a function that stops those we started.

    ``DOCKER_HOST`` if it answers, else the system engine, else ``count`` private engines under
    :data:`DEMO_ENGINES_ROOT` started with ``scripts/engines.py``.
    """
    env_url = os.environ.get("DOCKER_HOST")
    if env_url:
        if _answers(env_url):
            return [("engine", env_url)], lambda: None
        logger.warning("DOCKER_HOST=%s does not answer; looking further", env_url)
    if _answers(DEFAULT_URL):
        return [("engine", DEFAULT_URL)], lambda: None
    engines = _load_engines_module()
    if engines is None:
        raise CliError("no Docker engine answers (DOCKER_HOST, /var/run/docker.sock): start "
                       "one, or set DOCKER_HOST to an engine's URL")
    started = [engines.PrivateEngine(f"e{i}", Path(DEMO_ENGINES_ROOT) / f"e{i}")
               for i in range(1, count + 1)]

    def stop():
        for engine in started:
            try:
                engine.stop()
            except Exception as error:  # keep stopping the others
                logger.warning("could not stop engine %s: %s", engine.name, error)

    sys.stdout.write(f"No Docker engine answers: starting {count} private engines under "
                     f"{DEMO_ENGINES_ROOT}...\n")
    sys.stdout.flush()
    try:
        for engine in started:
            if not engine.answers():
                engine.start()
    except Exception as error:
        stop()
        raise CliError(f"cannot start a private engine ({error}); start a Docker engine or "
                       f"set DOCKER_HOST") from None
    return [(engine.name, engine.url) for engine in started], stop


def _ensure_busybox(url: str) -> None:
    """Builds the busybox base image on ``url`` (with ``scripts/engines.py``), or checks that
    the engine has it."""
    engines = _load_engines_module()
    if engines is not None and os.path.exists(getattr(engines, "BUSYBOX_BINARY", "/bin/busybox")):
        try:
            engines.build_busybox_image(url, BUSYBOX_IMAGE)
            return
        except Exception as error:
            raise CliError(f"cannot build {BUSYBOX_IMAGE} on {url}: {error}") from None
    import docker
    try:
        with docker.APIClient(base_url=url, timeout=30, version="auto") as client:
            client.inspect_image(BUSYBOX_IMAGE)
    except Exception:
        raise CliError(f"the engine {url} has no image {BUSYBOX_IMAGE}, and it cannot be built "
                       f"here (needs scripts/engines.py and /bin/busybox of busybox-static)"
                       ) from None


# -- demo ----------------------------------------------------------------------------------

#: Shell snippets for "print the sum of $1 and $2".
RIGHT = ["echo $(($1 + $2))", "expr $1 + $2", "echo $(($2 + $1))"]
WRONG = ["echo $(($1 - $2))", "echo $(($1 * $2))", "echo $1$2", "echo $(($1 + $2 + 1))"]


def _demo_jobs(task_factory, count: int = 40) -> List[Tuple[str, Any, Dict[str, Any]]]:
    """``(label, task, inputdata)`` for the demo: right and wrong answers plus one of each
    kind of misbehaviour."""
    rng = random.Random(7)
    grader = task_factory("grader")
    special = [
        ("loops forever", task_factory("grader", limits={"time": 1}),
         "while :; do :; done"),
        ("eats memory", task_factory("grader", limits={"memory": 20}),
         "x=$(yes | head -c 300000000); echo ${#x}"),
        ("prints without end", task_factory("grader", limits={"output": 10000}),
         "yes >&2"),
        ("missing image", task_factory("no-such-grader"), "echo $(($1 + $2))"),
        ("broken grader", task_factory("grader", command=[
            "sh", "-c", "cat > /dev/null; echo 'grader: segmentation fault' >&2; exit 139"]),
         "echo $(($1 + $2))"),
    ]
    jobs = []
    for i in range(count - len(special)):
        code = rng.choice(RIGHT) if i % 3 else rng.choice(WRONG)
        jobs.append(("answer", grader,
                     {"code": code, "a": rng.randint(-50, 99), "b": rng.randint(0, 99)}))
    for position, (label, task, code) in zip((3, 9, 15, 21, 27), special):
        jobs.insert(position, (label, task, {"code": code, "a": 1, "b": 2}))
    return jobs


def _progress(done: int, total: int, width: int = 40) -> str:
    filled = width * done // total if total else width
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _cmd_demo(args) -> int:
    from backend import JobManager, JobManagerBuffer, Task

    containers = _REPO / "examples" / "containers"
    if not (containers / "grader" / "Dockerfile").is_file():
        raise CliError(f"the demo needs examples/containers/grader of the source checkout "
                       f"(not found in {_REPO})")
    engines, stop_engines = _find_engines(args.engines)
    try:
        for _, url in engines:
            _ensure_busybox(url)
        instances = [{"server_url": url, "name": name, "container_prefix": DEMO_PREFIX,
                      "time_between_polls": 0.25} for name, url in engines]
        out = sys.stdout
        out.write(f"Engines: {', '.join(f'{n} ({u})' for n, u in engines)}\n")
        with JobManager(instances, containers_directory=str(containers)) as manager:
            out.write("Building the grader image...\n")
            out.flush()
            for engine, report in manager.build_images().items():
                for tag, error in report.items():
                    if error:
                        raise CliError(f"building {tag} on {engine} failed: "
                                       f"{error.splitlines()[0] if error else error}")

            def task_factory(environment, **options):
                command = options.pop("command", None)
                return Task(environment, command=command, **options)

            jobs = _demo_jobs(task_factory, args.jobs)
            buffer = JobManagerBuffer(manager)
            out.write(f"Grading {len(jobs)} submissions of 'print the sum of two numbers'...\n")
            start = time.monotonic()
            labels = {}
            for label, task, inputdata in jobs:
                labels[buffer.new_job(task, inputdata)] = label
            rows: Dict[Tuple[str, str, str], int] = collections.Counter()
            examples: Dict[str, Tuple[str, str]] = {}
            done = 0
            live = out.isatty()  # a redrawn bar on a terminal, a line per tenth otherwise
            if live:
                out.write(_progress(0, len(jobs)))
                out.flush()
            for job_id, result in buffer.as_completed(timeout=args.timeout):
                done += 1
                run = result.get("run") or {}
                rows[(result["result"], run.get("reason") or "-", run.get("host") or "-")] += 1
                if labels[job_id] != "answer" or result["result"] not in examples:
                    examples.setdefault(f"{result['result']} ({labels[job_id]})",
                                        (result["result"], result["text"]))
                if live or done == len(jobs) or done % max(1, len(jobs) // 10) == 0:
                    out.write(_progress(done, len(jobs)).lstrip("\r")
                              if not live else _progress(done, len(jobs)))
                    out.write("" if live else "\n")
                    out.flush()
            elapsed = time.monotonic() - start
            if live:
                out.write("\n")
        _print_summary(rows, examples, len(jobs), elapsed)
    finally:
        stop_engines()
    missing = [s for s in ("success", "failed", "timeout", "overflow", "crash")
               if not any(key[0] == s for key in rows)]
    if missing:
        raise CliError(f"the demo did not show the outcome(s) {', '.join(missing)}")
    return 0


def _print_summary(rows, examples, total: int, elapsed: float) -> None:
    out = sys.stdout
    header = ("status", "reason", "engine", "jobs")
    lines = [(status, reason, host, str(count)) for (status, reason, host), count in
             sorted(rows.items(), key=lambda item: (STATUS_ORDER.index(item[0][0]), item[0]))]
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(4)]

    def fmt(row):
        return "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(row, widths)))

    out.write("\n" + fmt(header) + "\n" + "  ".join("-" * w for w in widths) + "\n")
    for row in lines:
        out.write(fmt(row) + "\n")
    by_status = collections.Counter()
    for (status, _, _), count in rows.items():
        by_status[status] += count
    out.write("\nBy status: " + ", ".join(f"{s} {by_status[s]}" for s in STATUS_ORDER
                                          if by_status[s]) + "\n")
    out.write(f"{total} jobs in {elapsed:.1f} s: {total / elapsed if elapsed else 0:.1f} "
              f"jobs/s\n\nSome results:\n")
    for label, (_, text) in sorted(examples.items()):
        first = text.splitlines()[0] if text else ""
        out.write(f"  {label}: {first[:100]}\n")


# -- run -----------------------------------------------------------------------------------

def _cmd_run(args) -> int:
    from backend import JobManager, JobManagerSync, Task

    try:
        inputdata = json.loads(args.input)
    except ValueError as error:
        raise CliError(f"--input is not JSON: {error}") from None
    url = args.engine or os.environ.get("DOCKER_HOST") or DEFAULT_URL
    if not _answers(url):
        raise CliError(f"the Docker engine {url} does not answer (set DOCKER_HOST or --engine)")
    limits = {"time": args.time}
    if args.memory is not None:
        limits["memory"] = args.memory
    task = Task(args.image, command=["sh", "-c", args.command] if args.command else None,
                limits=limits)
    with JobManager([{"server_url": url, "time_between_polls": 0.25}]) as manager:
        result = JobManagerSync(manager).new_job(task, inputdata)
    sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    return EXIT_CODES.get(result["result"], 3)


# -- entry point ---------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m backend",
                     description="docker-job-manager: run jobs in Docker containers.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: info, -vv: debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    demo = commands.add_parser("demo", help="grade ~40 submissions over one or two engines")
    demo.add_argument("--jobs", type=int, default=40, help="submissions to grade (default 40)")
    demo.add_argument("--engines", type=int, default=2,
                      help="private engines to start when none answers (default 2)")
    demo.add_argument("--timeout", type=float, default=180,
                      help="seconds the grading may take (default 180)")
    demo.set_defaults(func=_cmd_demo)
    run = commands.add_parser(
        "run", help="run one job and print its result as JSON",
        description="Runs one job and prints its result. Exit code: 0 success, 1 failed or "
                    "error, 2 timeout or overflow, 3 crash or killed.")
    run.add_argument("--image", required=True, help="image to run")
    run.add_argument("--command", help="shell command, run with sh -c")
    run.add_argument("--input", default="null", help="the job's input, as JSON")
    run.add_argument("--time", type=float, default=30, help="CPU seconds (default 30)")
    run.add_argument("--memory", type=int, help="MiB of memory (default 100)")
    run.add_argument("--engine", help="engine URL (default: DOCKER_HOST, else the system's)")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CliError as error:
        sys.stdout.flush()
        sys.stderr.write(f"error: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as error:  # one line, never a traceback
        logger.debug("unexpected error", exc_info=True)
        sys.stdout.flush()
        sys.stderr.write(f"error: {type(error).__name__}: {error}\n")
        return 1
