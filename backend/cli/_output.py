"""The command line's text output: plain tables, progress bars, the summary of a run of jobs.

Used by :mod:`backend.cli` only (``demo`` and ``batch`` share the progress bar and the
summary); everything writes to the stream it is given, in the caller's thread.
"""
from __future__ import annotations

import collections
from typing import Counter, Iterable, List, Sequence, TextIO, Tuple

from backend.model import Result

#: The statuses in the order the summaries list them (docs/results.rst).
STATUS_ORDER = ("success", "failed", "error", "timeout", "overflow", "crash", "killed")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
          ) -> str:
    """A plain text table, columns separated by two spaces; ``right`` columns are aligned
    right."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [str(cell).rjust(w) if i in right else str(cell).ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(row) for row in rows]
    return "\n".join(lines) + "\n"


def first_line(text: object) -> str:
    """The first line of ``text`` (``""`` for none): an error in one line."""
    text = str(text or "").strip()
    return text.splitlines()[0] if text else ""


class Progress:
    """A progress bar on ``stream``: redrawn on a terminal, else a line per tenth done."""

    def __init__(self, stream: TextIO, total: int, width: int = 40) -> None:
        self.stream, self.total, self.width = stream, total, width
        self.live = stream.isatty()
        self.done = 0
        if self.live:
            self._write(self._bar())

    def _bar(self) -> str:
        filled = self.width * self.done // self.total if self.total else self.width
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total}"

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def step(self) -> None:
        """One more job done."""
        self.done += 1
        if self.live:
            self._write("\r" + self._bar())
        elif self.done == self.total or self.done % max(1, self.total // 10) == 0:
            self._write(self._bar() + "\n")

    def end(self) -> None:
        """Ends the redrawn line (on a terminal)."""
        if self.live:
            self._write("\n")


def _rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


class Tally:
    """Results counted by (status, reason, engine), and their summary."""

    def __init__(self) -> None:
        self.rows: Counter[Tuple[str, str, str]] = collections.Counter()

    def add(self, result: Result) -> None:
        run = result.get("run") or {}
        self.rows[(result["result"], run.get("reason") or "-", run.get("host") or "-")] += 1

    def statuses(self) -> List[str]:
        """The statuses seen."""
        return sorted({status for status, _, _ in self.rows}, key=_rank)

    def write(self, stream: TextIO, elapsed: float, suffix: str = "") -> None:
        """The table of counts, the count by status and the rate (``suffix`` ends its line)."""
        ordered = sorted(self.rows.items(), key=lambda item: (_rank(item[0][0]), item[0]))
        stream.write(table(("status", "reason", "engine", "jobs"),
                           [(*key, str(count)) for key, count in ordered], right=(3,)))
        by_status: Counter[str] = collections.Counter()
        for (status, _, _), count in self.rows.items():
            by_status[status] += count
        stream.write("By status: " + _joined(sorted(by_status.items(),
                                                    key=lambda item: _rank(item[0]))) + "\n")
        total = sum(self.rows.values())
        stream.write(f"{total} jobs in {elapsed:.1f} s: "
                     f"{total / elapsed if elapsed else 0:.1f} jobs/s{suffix}\n")


def _joined(counts: Iterable[Tuple[str, int]]) -> str:
    return ", ".join(f"{status} {count}" for status, count in counts)
