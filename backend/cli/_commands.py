"""The commands of ``jobmanager``: what each does, once its arguments are parsed
(:mod:`backend.cli` parses them and calls the command). ``demo`` grades the demo's
submissions, ``run`` runs one job, ``batch`` a JSON-lines file of jobs, ``hosts`` shows each
engine's state and where it came from, ``build`` builds images, ``cleanup`` removes what dead
managers left. Runs in the caller's main thread.
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
