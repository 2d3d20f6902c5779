"""The command line's raw jobs (``jobmanager run --raw``, docs/running-programs.rst): reading the job's stdin
and ``--file NAME=PATH`` options, printing its stdout and stderr, and its exit code.

Called by :mod:`backend.cli` only, in the caller's main thread; with :mod:`backend.cli` and
:mod:`backend.cli._output`, one of the three modules that write to stdout. Errors are
``ValueError``\\ s with a one-line text, which the command line reports.
"""
from __future__ import annotations

import sys
from typing import IO, Any, Dict, List, Optional

from backend.cli._output import first_line

#: Exit codes of ``run --raw`` for a job that did not end by itself (one that did exits with
#: its own exit code): 124 as ``timeout(1)``, 137 as a SIGKILL.
RAW_EXIT_CODES = {"timeout": 124, "overflow": 125, "crash": 126, "killed": 137}


def raw_exit_code(result: Dict[str, Any]) -> int:
    """The exit code of ``run --raw``: the job's own when it ended by itself, else
    :data:`RAW_EXIT_CODES` by status."""
    exit_code = (result.get("run") or {}).get("exit_code")
    if result["result"] in ("success", "failed") and isinstance(exit_code, int):
        return exit_code
    return RAW_EXIT_CODES.get(result["result"], 125)


def write_raw_result(result: Dict[str, Any], out: IO[str], err: IO[str]) -> int:
    """Prints a raw job's stdout to ``out`` and stderr to ``err`` (then, for a job that did
    not end by itself, one line saying why); returns the exit code (:func:`raw_exit_code`)."""
    run = result.get("run") or {}
    out.write(run.get("stdout", ""))
    out.flush()
    err.write(run.get("stderr", ""))
    if result["result"] not in ("success", "failed"):
        err.write(f"jobmanager: {result['result']} ({run.get('reason')}): "
                  f"{first_line(result['text'])}\n")
    return raw_exit_code(result)


def read_stdin(path: Optional[str]) -> bytes:
    """A raw job's stdin: the file ``path``, ``-`` for our standard input, None for none."""
    if path is None:
        return b""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        raise ValueError(f"cannot read --stdin {path}: {error}") from None


def read_files(specs: List[str]) -> Dict[str, bytes]:
    """``--file NAME=PATH`` options as ``files``: NAME in the job's working directory."""
    files: Dict[str, bytes] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--file {spec!r}: give NAME=PATH")
        try:
            with open(path, "rb") as stream:
                files[name] = stream.read()
        except OSError as error:
            raise ValueError(f"--file {spec}: cannot read {path}: {error}") from None
    return files


def bytes_as_text(value: Any) -> str:
    """An output file of a result, in a JSON line: its text (undecodable bytes: U+FFFD)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
