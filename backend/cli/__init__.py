"""Command line interface: ``jobmanager`` (or ``python -m backend``): argument parsing and
printing only.

Commands: ``demo`` grades about forty submissions of a small shell exercise (its logic and
images are :mod:`backend.cli._demo`'s) and prints a summary; ``run`` runs one job and prints its
result as JSON; ``batch`` runs the jobs of a JSON-lines file and writes their results as JSON
lines; ``hosts`` shows each engine's state; ``build`` builds the images of a containers
directory; ``cleanup`` removes containers left behind by managers that died. Engines are
reached only through :mod:`backend.docker._client`; tables, progress bars and summaries are
:mod:`backend.cli._output`'s, raw jobs' input and output (``run --raw``) :mod:`backend.cli._raw`'s.
These (with :mod:`backend.cli._commands`, each command's work) are the only modules of the package that write to stdout; they run in the
caller's main thread.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Optional, Sequence

from backend.cli._commands import (ENGINE_HELP, CliError, _cmd_batch, _cmd_build, _cmd_cleanup,
                                   _cmd_demo, _cmd_hosts, _cmd_run, _Parser)

logger = logging.getLogger("backend.cli")

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
