"""Command line interface: ``jobmanager`` (or ``python -m backend``).

Commands: ``demo`` grades about forty submissions of a small shell exercise over one or two
Docker engines and prints a summary; ``run`` runs one job and prints its result as JSON;
``batch`` runs the jobs of a JSON-lines file and writes their results as JSON lines; ``hosts``
shows each engine's state; ``build`` builds the images of a containers directory; ``cleanup``
removes containers left behind by managers that died. This module is the only place of the
package that writes to stdout.
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
    from backend._http import Client
    try:
        with Client(url, timeout=timeout) as client:
            return client.call("GET", "/_ping").strip() == b"OK"
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
    from backend._http import Client
    try:
        with Client(url, timeout=30) as client:
            client.json("GET", client.path("/images/{}/json", BUSYBOX_IMAGE))
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


# -- configuration shared by batch, hosts, build and cleanup ---------------------------------

def _settings(args, containers_directory: Optional[str] = None) -> Dict[str, Any]:
    """JobManager keyword arguments from ``--config`` or ``--engine``/``--prefix``/
    ``--max-jobs``, validated (a bad value is a :class:`CliError` with the ValueError's text).
    """
    from backend._config import load_config, parse_instances

    if args.config:
        if args.engine:
            raise CliError("give either --config or --engine, not both")
        if not os.path.isfile(args.config):
            raise CliError(f"configuration file {args.config} not found")
        try:
            settings = load_config(args.config)
        except json.JSONDecodeError as error:
            raise CliError(f"{args.config}: not JSON: {error}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise CliError(f"cannot read {args.config}: {error}") from None
        except ValueError as error:
            raise CliError(f"{args.config}: {error}") from None
        instances = settings["docker_instances"]
        if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
            raise CliError(f"{args.config}: docker_instances must be a list of dicts")
        instances = [dict(i) for i in instances]
    else:
        urls = args.engine or [os.environ.get("DOCKER_HOST") or DEFAULT_URL]
        instances = [{"server_url": url} for url in urls]
        settings = {}
    for instance in instances:
        if args.prefix is not None:
            instance["container_prefix"] = args.prefix
        if args.max_jobs is not None:
            instance["max_concurrent_jobs"] = args.max_jobs
    settings["docker_instances"] = instances
    if containers_directory is not None:
        settings["containers_directory"] = containers_directory
    try:
        parse_instances(instances)
    except ValueError as error:
        raise CliError(str(error)) from None
    return settings


def _instances(settings: Dict[str, Any]):
    from backend._config import parse_instances
    return parse_instances(settings["docker_instances"])


def _open_manager(settings: Dict[str, Any]):
    """A JobManager for ``settings``; a bad value is a :class:`CliError`."""
    from backend import JobManager
    try:
        return JobManager(**settings)
    except (ValueError, TypeError) as error:
        raise CliError(str(error)) from None


def _table(header: Sequence[str], rows: List[Sequence[str]], right: Sequence[int] = ()
           ) -> str:
    """A plain text table, columns separated by two spaces."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def fmt(row):
        cells = [str(cell).rjust(w) if i in right else str(cell).ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(row) for row in rows]
    return "\n".join(lines) + "\n"


def _first_line(text: Any) -> str:
    text = str(text or "").strip()
    return text.splitlines()[0] if text else ""


# -- batch ---------------------------------------------------------------------------------

_JOB_KEYS = {"image", "command", "input", "limits", "id"}


def _read_jobs(path: str) -> List[Tuple[int, Any, Any, Any]]:
    """``(line number, id, task, input)`` of every job of a JSON-lines file."""
    from backend import Task

    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.readlines()
    except FileNotFoundError:
        raise CliError(f"input file {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {path}: {error}") from None
    jobs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            job = json.loads(line)
        except ValueError as error:
            raise CliError(f"{where}: not JSON: {error}") from None
        if not isinstance(job, dict):
            raise CliError(f"{where}: a job must be a JSON object, not {type(job).__name__}")
        unknown = sorted(set(job) - _JOB_KEYS)
        if unknown:
            raise CliError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: "
                           f"{', '.join(sorted(_JOB_KEYS))}")
        image = job.get("image")
        if not isinstance(image, str) or not image:
            raise CliError(f"{where}: 'image' (an image name) is missing")
        command = job.get("command")
        if isinstance(command, str):
            command = ["sh", "-c", command]
        elif command is not None and not (isinstance(command, list)
                                          and all(isinstance(c, str) for c in command)):
            raise CliError(f"{where}: 'command' must be a string or a list of strings")
        try:
            task = Task(image, command=command, limits=job.get("limits"))
        except (ValueError, TypeError) as error:
            raise CliError(f"{where}: {error}") from None
        jobs.append((number, job.get("id", number), task, job.get("input")))
    if not jobs:
        raise CliError(f"{path} holds no job")
    return jobs


def _cmd_batch(args) -> int:
    from backend import JobManagerBuffer

    jobs = _read_jobs(args.input)
    settings = _settings(args)
    try:
        out = open(args.output, "w", encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot write {args.output}: {error}") from None
    err = sys.stderr
    live = err.isatty()
    rows: Dict[Tuple[str, str, str], int] = collections.Counter()
    with out, _open_manager(settings) as manager:
        buffer = JobManagerBuffer(manager)
        start = time.monotonic()
        where = {}
        for number, job_id, task, inputdata in jobs:
            try:
                where[buffer.new_job(task, inputdata)] = (number, job_id)
            except (TypeError, ValueError) as error:
                raise CliError(f"{args.input}, line {number}: {error}") from None
        total, done = len(jobs), 0
        if live:
            err.write(_progress(0, total))
            err.flush()
        try:
            for key, result in buffer.as_completed(timeout=args.timeout):
                done += 1
                number, job_id = where[key]
                out.write(json.dumps({"id": job_id, "line": number, "result": result},
                                     ensure_ascii=False) + "\n")
                out.flush()
                run = result.get("run") or {}
                rows[(result["result"], run.get("reason") or "-", run.get("host") or "-")] += 1
                if live:
                    err.write(_progress(done, total))
                elif done == total or done % max(1, total // 10) == 0:
                    err.write(_progress(done, total).lstrip("\r") + "\n")
                err.flush()
        except TimeoutError:
            if live:
                err.write("\n")
            raise CliError(f"{total - done} of {total} job(s) still running after "
                           f"{args.timeout:g} s: killed ({done} result(s) in {args.output})"
                           ) from None
        elapsed = time.monotonic() - start
        if live:
            err.write("\n")
    ordered = sorted(rows.items(), key=lambda item: (
        STATUS_ORDER.index(item[0][0]) if item[0][0] in STATUS_ORDER else len(STATUS_ORDER),
        item[0]))
    sys.stdout.write(_table(("status", "reason", "engine", "jobs"),
                            [(*key, str(count)) for key, count in ordered], right=(3,)))
    by_status = collections.Counter()
    for (status, _, _), count in rows.items():
        by_status[status] += count
    sys.stdout.write("By status: " + ", ".join(f"{s} {n}" for s, n in sorted(
        by_status.items(), key=lambda item: STATUS_ORDER.index(item[0])
        if item[0] in STATUS_ORDER else 99)) + "\n")
    sys.stdout.write(f"{total} jobs in {elapsed:.1f} s: "
                     f"{total / elapsed if elapsed else 0:.1f} jobs/s; results in "
                     f"{args.output}\n")
    return 0


# -- hosts ---------------------------------------------------------------------------------

def _cmd_hosts(args) -> int:
    from backend import _docker

    rows, problems = [], []
    for instance in _instances(_settings(args)):
        capacity = str(instance.max_concurrent_jobs) if instance.max_concurrent_jobs \
            else "unlimited"
        try:
            client = _docker.connect(instance, timeout=args.timeout)
            with client:
                version = client.version().get("Version", "?")
                running = len(client.containers(_docker.LABEL_MANAGER, all_states=False))
        except Exception as error:  # any failure means: not reachable
            text = error.text if isinstance(error, _docker.DockerFailure) else str(error)
            rows.append((instance.name, "no", "-", "-", capacity))
            problems.append(f"{instance.name}: {_first_line(text)}")
            continue
        rows.append((instance.name, "yes", version, str(running), capacity))
    sys.stdout.write(_table(("engine", "reachable", "docker", "running jobs", "capacity"),
                            rows, right=(3, 4)))
    for problem in problems:
        sys.stdout.write(f"unreachable: {problem}\n")
    return 1 if problems else 0


# -- build ---------------------------------------------------------------------------------

def _cmd_build(args) -> int:
    settings = _settings(args, args.containers_directory)
    folder = settings.get("containers_directory")
    if not folder:
        raise CliError("give --containers-directory (or containers_directory in --config)")
    if not os.path.isdir(folder):
        raise CliError(f"containers directory {folder} is not a folder")
    if not any(os.path.isfile(os.path.join(folder, name, "Dockerfile"))
               for name in os.listdir(folder)):
        raise CliError(f"{folder} has no sub-folder with a Dockerfile")
    # build_images logs each failure; the lines below already say it
    backend_logger = logging.getLogger("backend")
    if not args.verbose:
        backend_logger.setLevel(logging.CRITICAL)
    rows, failed = [], 0
    try:
        with _open_manager(settings) as manager:
            report = manager.build_images()
    finally:
        backend_logger.setLevel(logging.NOTSET)
    for engine, images in report.items():
        for tag, error in sorted(images.items()):
            if error:
                failed += 1
            rows.append((tag, engine, f"error: {_first_line(error)}" if error else "ok"))
    sys.stdout.write(_table(("image", "engine", "build"), rows))
    built = len(rows) - failed
    sys.stdout.write(f"{built} built, {failed} failed\n")
    return 1 if failed else 0


# -- cleanup -------------------------------------------------------------------------------

def _cmd_cleanup(args) -> int:
    from backend import _docker

    status = 0
    for instance in _instances(_settings(args)):
        try:
            client = _docker.connect(instance)
        except _docker.DockerFailure as failure:
            sys.stdout.write(f"{instance.name}: unreachable ({_first_line(failure.text)})\n")
            status = 1
            continue
        with client:
            try:
                if args.all:
                    ids = [c["Id"] for c in client.containers(_docker.LABEL_MANAGER)]
                else:
                    ids = _docker.dead_managers_containers(client)
                left, _ = _docker.remove_containers(client, ids)
            except Exception as error:  # the engine answered something unexpected
                sys.stdout.write(f"{instance.name}: failed ({_first_line(error)})\n")
                status = 1
                continue
        line = f"{instance.name}: removed {len(ids) - len(left)} container(s)"
        if left:
            line += f", {len(left)} could not be removed"
            status = 1
        sys.stdout.write(line + "\n")
    return status


# -- entry point ---------------------------------------------------------------------------

def _common_options() -> argparse.ArgumentParser:
    """``--config``, ``--engine``, ``--prefix``, ``--max-jobs``: for the commands that use a
    configuration."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("configuration")
    group.add_argument("--config", metavar="FILE",
                       help="a JobManager.from_config JSON file (instead of --engine)")
    group.add_argument("--engine", action="append", metavar="URL",
                       help="an engine URL; repeat for several (default: DOCKER_HOST, else "
                            f"{DEFAULT_URL})")
    group.add_argument("--prefix", metavar="PREFIX",
                       help="container_prefix of every engine (prefixed to image names)")
    group.add_argument("--max-jobs", type=int, metavar="N",
                       help="max_concurrent_jobs of every engine (0: no limit)")
    return common


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "jobmanager" if name.startswith("jobmanager") else "python -m backend"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_prog(),
                     description="docker-job-manager: run jobs in Docker containers.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: info, -vv: debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     parser_class=_Parser)
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

    common = _common_options()
    batch = commands.add_parser(
        "batch", parents=[common], help="run the jobs of a JSON-lines file",
        description='Runs every job of IN (one JSON object a line: {"image": ..., "command": '
                    '[...] or "shell string", "input": ..., "limits": {...}, "id": ...}), '
                    'writes each result to OUT as a JSON line {"id", "line", "result"} in the '
                    "order the jobs end, shows progress on stderr and a summary on stdout.")
    batch.add_argument("input", metavar="IN.jsonl", help="the jobs")
    batch.add_argument("output", metavar="OUT.jsonl", help="where to write the results")
    batch.add_argument("--timeout", type=float,
                       help="seconds the whole batch may take (default: no limit)")
    batch.set_defaults(func=_cmd_batch)
    hosts = commands.add_parser(
        "hosts", parents=[common], help="show each engine's state",
        description="Shows, per engine: whether it answers, its Docker version, the running "
                    "containers of ours (label backend.manager) and its capacity "
                    "(max_concurrent_jobs). Exit code 1 if an engine is unreachable.")
    hosts.add_argument("--timeout", type=float, default=5,
                       help="seconds to wait for each engine (default 5)")
    hosts.set_defaults(func=_cmd_hosts)
    build = commands.add_parser(
        "build", parents=[common], help="build the images of a containers directory",
        description="Builds every sub-folder (with a Dockerfile) of the containers directory "
                    "on every engine, tagged container_prefix + folder name. Exit code 1 if "
                    "a build failed.")
    build.add_argument("--containers-directory", metavar="DIR",
                       help="the folder to build (default: containers_directory of --config)")
    build.set_defaults(func=_cmd_build)
    cleanup = commands.add_parser(
        "cleanup", parents=[common], help="remove containers left by dead managers",
        description="Removes the containers of ours whose manager (label backend.owner = "
                    "hostname:pid) ran on this host and is gone; with --all, every container "
                    "labelled backend.manager, running jobs included.")
    cleanup.add_argument("--all", action="store_true",
                         help="remove every container of ours, even of live managers")
    cleanup.set_defaults(func=_cmd_cleanup)
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
