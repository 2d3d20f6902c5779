"""Command line interface: ``jobmanager`` (or ``python -m backend``): argument parsing and
printing only.

Commands: ``demo`` grades about forty submissions of a small shell exercise (its logic and
images are :mod:`backend.cli._demo`'s) and prints a summary; ``run`` runs one job and prints its
result as JSON; ``batch`` runs the jobs of a JSON-lines file and writes their results as JSON
lines; ``hosts`` shows each engine's state; ``build`` builds the images of a containers
directory; ``cleanup`` removes containers left behind by managers that died. Engines are
reached only through :mod:`backend.docker._client`; tables, progress bars and summaries are
:mod:`backend.cli._output`'s, raw jobs' input and output (``run --raw``) :mod:`backend.cli._raw`'s.
These three are the only modules of the package that write to stdout; they run in the
caller's main thread.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import time
from typing import (TYPE_CHECKING, Any, Callable, Dict, List, NoReturn, Optional, Sequence,
                    Union)

from backend import docker, model
from backend.model import InstanceConfig, parse_instances, settings_from
from backend.cli._output import Progress, Tally, first_line, table
from backend.cli._raw import bytes_as_text, read_files, read_stdin, write_raw_result

if TYPE_CHECKING:  # imported on use: the public API's imports cost only the commands using it
    from backend import JobManager

logger = logging.getLogger("backend.cli")

DEFAULT_URL = model.DEFAULT_URL
#: Exit codes of ``run`` by result status.
EXIT_CODES = {"success": 0, "failed": 1, "error": 1, "timeout": 2, "overflow": 2,
              "crash": 3, "killed": 3}
ENGINE_HELP = (f"an engine URL; repeat for several (default: DOCKER_HOST, else the current "
               f"docker context, else {DEFAULT_URL})")


class CliError(Exception):
    """An error reported as one line on stderr."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- engines -------------------------------------------------------------------------------

def _config_of(engine: Union[str, Dict[str, Any]]) -> InstanceConfig:
    """The configuration of ``engine`` (a URL, or a ``docker_instances`` dict), named by its
    URL; a bad one is a :class:`CliError`."""
    try:
        return parse_instances([engine if isinstance(engine, dict)
                                else {"server_url": engine}])[0]
    except ValueError as error:
        raise CliError(str(error)) from None


def _default_engine() -> model.EnvEngine:
    """The engine the docker CLI would use (DOCKER_HOST, else the current context, else the
    local socket); a context that cannot be read is a :class:`CliError`."""
    try:
        return model.resolve()
    except ValueError as error:
        raise CliError(str(error)) from None


def _url(engine: Union[str, Dict[str, Any]]) -> str:
    return engine["server_url"] if isinstance(engine, dict) else engine


def _answers(engine: Union[str, Dict[str, Any]], timeout: float = 3.0) -> bool:
    """Whether ``engine`` (a URL or a ``docker_instances`` dict) answers a ping."""
    try:
        with docker.connect(_config_of(engine), timeout=timeout) as connected:
            connected.ping()
            return True
    except docker.DockerFailure as failure:
        logger.info("%s does not answer: %s", _url(engine), first_line(failure.text))
        return False


def _demo_engines(urls: Optional[List[str]]) -> List[Union[str, Dict[str, Any]]]:
    """The engines of the demo: every ``--engine`` (each must answer), else the first that
    answers of the docker CLI's engine (:func:`_default_engine`) and the system engine."""
    if urls:
        silent = [url for url in urls if not _answers(url)]
        if silent:
            raise CliError(f"the Docker engine(s) {', '.join(silent)} do not answer")
        return list(urls)
    default = _default_engine()
    candidates: List[Union[str, Dict[str, Any]]] = [default.instance]
    if default.instance["server_url"] != DEFAULT_URL:
        candidates.append(DEFAULT_URL)
    for engine in candidates:
        if _answers(engine):
            return [engine]
    raise CliError(f"no Docker engine answers ({', '.join(map(_url, candidates))}): start one "
                   f"(dockerd; in a checkout, make demo starts private ones) or set DOCKER_HOST "
                   f"to an engine's URL")


# -- demo ----------------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> int:
    from backend.cli import _demo

    urls = _demo_engines(args.engine)
    out = sys.stdout
    out.write(f"Engines: {', '.join(map(_url, urls))}\n")
    tally = Tally()
    examples: Dict[str, str] = {}
    try:
        with _demo.Demo(urls) as demo:
            out.write("Building the images...\n")
            out.flush()
            demo.build()
            jobs = _demo.submissions(args.jobs)
            out.write(f"Grading {len(jobs)} submissions of 'print the sum of two numbers'...\n")
            progress = Progress(out, len(jobs))
            start = time.monotonic()
            for job, result in demo.grade(jobs, args.timeout):
                progress.step()
                tally.add(result)
                if job.label != "answer" or result["result"] not in examples:
                    examples.setdefault(f"{result['result']} ({job.label})", result["text"])
            elapsed = time.monotonic() - start
            progress.end()
    except _demo.DemoError as error:
        raise CliError(first_line(error)) from None
    out.write("\n")
    tally.write(out, elapsed)
    out.write("\nSome results:\n")
    for label, text in sorted(examples.items()):
        out.write(f"  {label}: {first_line(text)[:100]}\n")
    missing = _demo.missing_outcomes(tally.statuses())
    if missing:
        raise CliError(f"the demo did not show the outcome(s) {', '.join(missing)}")
    return 0


# -- run -----------------------------------------------------------------------------------

def _cmd_run(args: argparse.Namespace) -> int:
    from backend import JobManager, JobManagerSync, Task

    try:
        files = read_files(args.file or [])
        inputdata: Any = read_stdin(args.stdin) if args.raw else json.loads(args.input)
    except json.JSONDecodeError as error:
        raise CliError(f"--input is not JSON: {error}") from None
    except ValueError as error:  # a --stdin or --file that cannot be read
        raise CliError(str(error)) from None
    engine = args.engine or _default_engine().instance
    if not _answers(engine):
        raise CliError(f"the Docker engine {_url(engine)} does not answer (set DOCKER_HOST or "
                       f"--engine)")
    limits: Dict[str, float] = {"time": args.time}
    if args.memory is not None:
        limits["memory"] = args.memory
    try:
        task = Task(args.image, command=["sh", "-c", args.command] if args.command else None,
                    limits=limits, protocol="raw" if args.raw else "json")
        instance = engine if isinstance(engine, dict) else {"server_url": engine}
        with JobManager([dict(instance, time_between_polls=0.25)]) as manager:
            result = JobManagerSync(manager).new_job(task, inputdata, files=files or None)
    except (TypeError, ValueError) as error:
        raise CliError(str(error)) from None
    if not args.raw:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return EXIT_CODES.get(result["result"], 3)
    return write_raw_result(result, sys.stdout, sys.stderr)


# -- configuration shared by batch, hosts, build and cleanup ---------------------------------

def _settings(args: argparse.Namespace, containers_directory: Optional[str] = None
              ) -> Dict[str, Any]:
    """JobManager keyword arguments from ``--config`` or ``--engine``/``--prefix``/
    ``--max-jobs``, validated (a bad value is a :class:`CliError` with the ValueError's text).
    """
    if args.config and args.engine:
        raise CliError("give either --config or --engine, not both")
    try:
        return settings_from(args.config, args.engine or [_default_engine().instance],
                             args.prefix, args.max_jobs, containers_directory)
    except ValueError as error:
        raise CliError(str(error)) from None


def _instances(settings: Dict[str, Any]) -> List[InstanceConfig]:
    return parse_instances(settings["docker_instances"])


def _open_manager(settings: Dict[str, Any]) -> "JobManager":
    """A JobManager for ``settings``; a bad value is a :class:`CliError`."""
    from backend import JobManager
    try:
        return JobManager(**settings)
    except (ValueError, TypeError) as error:
        raise CliError(str(error)) from None


# -- batch ---------------------------------------------------------------------------------

def _cmd_batch(args: argparse.Namespace) -> int:
    from backend import JobManagerBuffer
    from backend.model import read_jobs_file

    try:
        jobs = read_jobs_file(args.input)
    except ValueError as error:
        raise CliError(str(error)) from None
    settings = _settings(args)
    try:
        out = open(args.output, "w", encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot write {args.output}: {error}") from None
    tally = Tally()
    with out, _open_manager(settings) as manager:
        buffer = JobManagerBuffer(manager)
        start = time.monotonic()
        where = {}
        for number, job_id, task, inputdata, files in jobs:
            try:
                where[buffer.new_job(task, inputdata, files=files)] = (number, job_id)
            except (TypeError, ValueError) as error:
                raise CliError(f"{args.input}, line {number}: {error}") from None
        total = len(jobs)
        progress = Progress(sys.stderr, total)
        try:
            for key, result in buffer.as_completed(timeout=args.timeout):
                number, job_id = where[key]
                out.write(json.dumps({"id": job_id, "line": number, "result": result},
                                     ensure_ascii=False, default=bytes_as_text) + "\n")
                out.flush()
                tally.add(result)
                progress.step()
        except TimeoutError:
            progress.end()
            raise CliError(f"{total - progress.done} of {total} job(s) still running after "
                           f"{args.timeout:g} s: killed ({progress.done} result(s) in "
                           f"{args.output})") from None
        elapsed = time.monotonic() - start
        progress.end()
    tally.write(sys.stdout, elapsed, f"; results in {args.output}")
    return 0


# -- hosts ---------------------------------------------------------------------------------

def _shares(containers: List[Dict[str, Any]]) -> str:
    """Each manager's share of the running ``containers``, largest first: ``3+1``; ``-``."""
    counts = collections.Counter((c.get("Labels") or {}).get(docker.LABEL_MANAGER, "?")
                                 for c in containers)
    return "+".join(str(n) for n in sorted(counts.values(), reverse=True)) or "-"


def _sources(args: argparse.Namespace, count: int) -> List[str]:
    """Where each engine of :func:`_settings` came from, for ``hosts``."""
    if args.config:
        return ["--config"] * count
    if args.engine:
        return ["--engine"] * count
    return [_default_engine().source] * count


def _cmd_hosts(args: argparse.Namespace) -> int:
    rows, problems = [], []
    configs = _instances(_settings(args))
    for config, source in zip(configs, _sources(args, len(configs))):
        capacity = str(config.max_concurrent_jobs) if config.max_concurrent_jobs \
            else "unlimited"
        try:
            with docker.connect(config, timeout=args.timeout) as engine:
                features = engine.features  # detected by connect(), with the version we speak
                running = engine.containers(docker.LABEL_MANAGER, all_states=False)
        except docker.DockerFailure as failure:
            rows.append((config.name, source, "no", "-", "-", "-", "-", "-", capacity))
            problems.append(f"{config.name}: {first_line(failure.text)}")
            continue
        rows.append((config.name, source, "yes", features.kind.value, features.version,
                     features.api_version, str(len(running)),
                     _shares(running), capacity))
    sys.stdout.write(table(("engine", "from", "reachable", "kind", "version", "api",
                            "running jobs", "by manager", "capacity"), rows, right=(6, 7, 8)))
    for problem in problems:
        sys.stdout.write(f"unreachable: {problem}\n")
    return 1 if problems else 0


# -- build ---------------------------------------------------------------------------------

def _cmd_build(args: argparse.Namespace) -> int:
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
            rows.append((tag, engine, f"error: {first_line(error)}" if error else "ok"))
    sys.stdout.write(table(("image", "engine", "build"), rows))
    built = len(rows) - failed
    sys.stdout.write(f"{built} built, {failed} failed\n")
    return 1 if failed else 0


# -- cleanup -------------------------------------------------------------------------------

def _cmd_cleanup(args: argparse.Namespace) -> int:
    status = 0
    for config in _instances(_settings(args)):
        try:
            with docker.connect(config) as engine:
                if args.all:
                    ids = [c["Id"] for c in engine.containers(docker.LABEL_MANAGER)]
                else:
                    ids = docker.dead_managers_containers(engine)
                left, _ = docker.remove_containers(engine, ids)
        except docker.DockerFailure as failure:
            what = "failed" if failure.reason != "engine_unreachable" else "unreachable"
            sys.stdout.write(f"{config.name}: {what} ({first_line(failure.text)})\n")
            status = 1
            continue
        line = f"{config.name}: removed {len(ids) - len(left)} container(s)"
        if left:
            line += f", {len(left)} could not be removed"
            status = 1
        sys.stdout.write(line + "\n")
    return status


# -- entry point ---------------------------------------------------------------------------

def _common_options() -> _Parser:
    """``--config``, ``--engine``, ``--prefix``, ``--max-jobs``: for the commands that use a
    configuration."""
    common = _Parser(add_help=False)
    group = common.add_argument_group("configuration")
    group.add_argument("--config", metavar="FILE",
                       help="a JobManager.from_config JSON file (instead of --engine)")
    group.add_argument("--engine", action="append", metavar="URL", help=ENGINE_HELP)
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
    common = _common_options()

    def command(name: str, func: Callable[[argparse.Namespace], int], summary: str,
                description: Optional[str] = None, configured: bool = False
                ) -> argparse.ArgumentParser:
        """A sub-command running ``func``; ``configured`` adds the configuration options."""
        sub = commands.add_parser(name, help=summary, description=description or summary,
                                  parents=[common] if configured else [])
        sub.set_defaults(func=func)
        return sub

    demo = command("demo", _cmd_demo, "grade ~40 submissions over one or more engines",
                   "Grades ~40 submissions of a small shell exercise over the engines (builds "
                   "its images from the host's /bin/busybox of busybox-static) and prints a "
                   "summary of every outcome.")
    demo.add_argument("--jobs", type=int, default=40, help="submissions to grade (default 40)")
    demo.add_argument("--engine", action="append", metavar="URL", help=ENGINE_HELP)
    demo.add_argument("--timeout", type=float, default=180,
                      help="seconds the grading may take (default 180)")
    run = command("run", _cmd_run, "run one job and print its result as JSON",
                  "Runs one job and prints its result. Exit code: 0 success, 1 failed or "
                  "error, 2 timeout or overflow, 3 crash or killed. With --raw: prints its "
                  "stdout and stderr, exits with its exit code, or 124 (timeout), 125 "
                  "(overflow), 126 (crash), 137 (killed) for a job it did not end itself.")
    run.add_argument("--image", required=True, help="image to run")
    run.add_argument("--command", help="shell command, run with sh -c")
    run.add_argument("--input", default="null", help="the job's input, as JSON")
    run.add_argument("--raw", action="store_true", help="any program: stdin, stdout, exit code")
    run.add_argument("--stdin", metavar="FILE", help="--raw: the job's stdin ('-': ours)")
    run.add_argument("--file", action="append", metavar="NAME=PATH",
                     help="PATH as NAME in the job's working directory (repeatable)")
    run.add_argument("--time", type=float, default=30, help="CPU seconds (default 30)")
    run.add_argument("--memory", type=int, help="MiB of memory (default 100)")
    run.add_argument("--engine", help="engine URL (default: DOCKER_HOST, else the current docker "
                                      "context, else the system's)")
    batch = command(
        "batch", _cmd_batch, "run the jobs of a JSON-lines file",
        'Runs every job of IN (one JSON object a line: {"image": ..., "command": [...] or '
        '"shell string", "input": ..., "limits": {...}, "id": ..., "protocol", "files", '
        '"outputs", "workdir": see Task), writes each result to '
        'OUT as a JSON line {"id", "line", "result"} in the order the jobs end, shows '
        "progress on stderr and a summary on stdout.", configured=True)
    batch.add_argument("input", metavar="IN.jsonl", help="the jobs")
    batch.add_argument("output", metavar="OUT.jsonl", help="where to write the results")
    batch.add_argument("--timeout", type=float,
                       help="seconds the whole batch may take (default: no limit)")
    hosts = command(
        "hosts", _cmd_hosts, "show each engine's state",
        "Shows, per engine: whether it answers, its kind (Docker or Podman), version and API "
        "version, the running containers of ours (label backend.manager) and its capacity "
        "(max_concurrent_jobs). Exit code 1 if an engine is unreachable.", configured=True)
    hosts.add_argument("--timeout", type=float, default=5,
                       help="seconds to wait for each engine (default 5)")
    build = command(
        "build", _cmd_build, "build the images of a containers directory",
        "Builds every sub-folder (with a Dockerfile) of the containers directory on every "
        "engine, tagged container_prefix + folder name. Exit code 1 if a build failed.",
        configured=True)
    build.add_argument("--containers-directory", metavar="DIR",
                       help="the folder to build (default: containers_directory of --config)")
    cleanup = command(
        "cleanup", _cmd_cleanup, "remove containers left by dead managers",
        "Removes the containers of ours whose manager (label backend.owner = hostname:pid) "
        "ran on this host and is gone; with --all, every container labelled backend.manager, "
        "running jobs included.", configured=True)
    cleanup.add_argument("--all", action="store_true",
                         help="remove every container of ours, even of live managers")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
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
