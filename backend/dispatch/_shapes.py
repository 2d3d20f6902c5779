"""The warm pool's bookkeeping (docs/performance.rst, warm starts): which warm containers each engine has, of which
task shape, which are starting, which shapes are wanted, and when idle ones expire.

A *task shape* is the whole container definition of a job (:func:`shape_of`): two jobs of
one shape would get the same container but for its name and labels. The warm container of a
raw job or of a job with files runs a gate (:func:`gated`): its program starts once the job's
files are written and a line comes, and the job's own input follows that line. Once a job of a shape
was placed on an engine whose ``warm_containers`` is above 0, the engine keeps up to that
many containers of the shape created, attached (on a plain connection: over TLS nobody is
attached until a job takes one) and started, waiting for their input, for as long as the
shape was used within ``warm_idle`` seconds; each one serves exactly one job.

Pure bookkeeping (no pipe, no process; the clock is the caller's ``now``, monotonic
seconds): the dispatcher's :class:`~backend.dispatch._warm.WarmStarts` owns the one instance
and is its only caller; the unit tests drive it directly. The descriptors it records (each
warm container's open attach, on a plain connection) are the caller's to close.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Sequence, Set, Tuple

from backend.model import InstanceConfig, JobSpec

#: The whole container definition of a job, hashable (see :func:`shape_of`).
Shape = Hashable


def shape_of(spec: Optional[JobSpec]) -> Optional[Shape]:
    """The task shape of a job, or None when it needs no container. A raw job or
    a job with files has a shape of its own (its warm container runs the gate, see
    :func:`gated`), with its working directory; its files are not part of it."""
    if spec is None or spec.task.environment is None:
        return None
    # every field of the snapshot, so that a field added to it can never be left out of the
    # shape (a warm container of another definition would then serve the job)
    return tuple(_frozen(getattr(spec.task, f.name)) for f in dataclasses.fields(spec.task)) \
        + (spec.workdir, gated(spec))


def gated(spec: JobSpec) -> bool:
    """Whether a job's warm container runs the gate: its program must not start before its
    files are written and its input comes (a raw job, a job with files)."""
    return bool(spec.files) or spec.task.protocol != "json"


def warm_spec(job_id: str, spec: JobSpec) -> JobSpec:
    """What a warm container for jobs of ``spec``'s shape is made of: the task with the
    job's working directory, without input or files (they are the job's)."""
    return JobSpec(job_id, dataclasses.replace(spec.task, workdir=spec.workdir), b"")


def _frozen(value: Any) -> Hashable:
    """``value`` made hashable: a dict as its sorted items, a list as a tuple."""
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    if isinstance(value, list):
        return tuple(value)
    return value


@dataclass(eq=False)
class WarmContainer:
    """A warm container: starting (no ``container_id`` yet) or waiting for its job.

    Attributes:
        warm_id: its own id, in place of a job's (its ``backend.job`` label, its name).
        engine: the engine it is on.
        shape: its task shape.
        spec: what its submitter creates (the job's spec that made the shape wanted, without
            input).
        container_id: set once started.
        fd: its open attach, once started (stdin, stdout and stderr); None over TLS, where
            the job's submitter attaches when it takes the container.
        since: when it started waiting (monotonic seconds).
        gate: its program waits behind the gate (:func:`gated`).
    """

    warm_id: str
    engine: str
    shape: Shape
    spec: JobSpec
    container_id: Optional[str] = None
    fd: Optional[int] = None
    since: float = 0.0
    gate: bool = False

    @property
    def name(self) -> str:
        """Its container's name (known before its creation, as a job's is)."""
        return f"backend-{self.warm_id}"


class WarmPool:
    """The warm containers of every engine. See the module docstring.

    Args:
        configs: the engines (their ``warm_containers`` and ``warm_idle``).
    """

    def __init__(self, configs: Sequence[InstanceConfig]):
        self.sizes = {c.name: c.warm_containers for c in configs}
        self.idle = {c.name: c.warm_idle for c in configs}
        self.ready: Dict[str, List[WarmContainer]] = {c.name: [] for c in configs}
        self.starting: Dict[str, WarmContainer] = {}  # warm id -> container
        self.hits = {c.name: 0 for c in configs}
        # (engine, shape) -> its last use, its warm container's spec, whether it is gated
        self._wanted: Dict[Tuple[str, Shape], Tuple[float, JobSpec, bool]] = {}
        # the engine and image pairs whose image cannot run the gate: gated jobs start cold
        self.cold_only: Set[Tuple[str, str]] = set()
        self._ids = itertools.count(1)

    # -- counts --------------------------------------------------------------------------
    def count(self, engine: str) -> int:
        """The warm containers on ``engine``, started or starting: they hold its slots."""
        return len(self.ready[engine]) + sum(
            1 for w in self.starting.values() if w.engine == engine)

    def _of_shape(self, engine: str, shape: Shape) -> int:
        return sum(1 for w in self.ready[engine] if w.shape == shape) + sum(
            1 for w in self.starting.values() if w.engine == engine and w.shape == shape)

    # -- shapes --------------------------------------------------------------------------
    def used(self, engine: str, spec: Optional[JobSpec], now: float) -> None:
        """A job of ``spec``'s shape was placed on ``engine``: the shape is wanted warm there
        (when the engine has warm starts and the job can be served warm)."""
        if not self.sizes.get(engine):
            return
        shape = shape_of(spec)
        if shape is None or spec is None:
            return
        gate = gated(spec)
        if gate and (engine, spec.task.environment) in self.cold_only:
            return
        self._wanted[(engine, shape)] = (now, warm_spec(spec.job_id, spec), gate)

    def wanted(self, engine: str, now: float, manager_id: str = "") -> Optional[WarmContainer]:
        """A new warm container for ``engine``, registered as starting, of the shape used
        last there that lacks one; None if none is wanted. Shapes unused for ``warm_idle``
        are forgotten."""
        size = self.sizes.get(engine, 0)
        candidates = []
        for (on, shape), (last, spec, gate) in list(self._wanted.items()):
            if on != engine:
                continue
            if now - last >= self.idle[engine]:
                del self._wanted[(on, shape)]
            elif self._of_shape(engine, shape) < size:
                candidates.append((last, shape, spec, gate))
        if not candidates:
            return None
        _, shape, spec, gate = max(candidates, key=lambda c: c[0])
        warm_id = f"warm-{manager_id[:8]}-{next(self._ids)}"
        container = WarmContainer(warm_id, engine, shape, warm_spec(warm_id, spec), gate=gate)
        self.starting[warm_id] = container
        return container

    def forget(self, engine: str, shape: Shape) -> None:
        """No more warm containers of ``shape`` on ``engine`` until a job of it is placed
        there again (one failed to start, or died before its job came)."""
        self._wanted.pop((engine, shape), None)

    def cold_only_image(self, engine: str, image: str) -> bool:
        """The image cannot run the gate on ``engine``: its gated jobs start cold from now on.
        True the first time (for a log line said once)."""
        known = (engine, image) in self.cold_only
        self.cold_only.add((engine, image))
        for (on, shape), (_, spec, gate) in list(self._wanted.items()):
            if on == engine and gate and spec.task.environment == image:
                del self._wanted[(on, shape)]
        return not known

    # -- a container's life --------------------------------------------------------------
    def started(self, warm_id: str, container_id: str, fd: Optional[int], now: float
                ) -> Optional[WarmContainer]:
        """A starting container runs and waits (``fd``: its attach; None over TLS); None if
        it is not known (any more)."""
        container = self.starting.pop(warm_id, None)
        if container is None:
            return None
        container.container_id, container.fd, container.since = container_id, fd, now
        self.ready[container.engine].append(container)
        return container

    def start_failed(self, warm_id: str) -> Optional[WarmContainer]:
        """A starting container failed to start (or its submitter died): its shape is
        forgotten on its engine."""
        container = self.starting.pop(warm_id, None)
        if container is not None:
            self.forget(container.engine, container.shape)
        return container

    def take(self, engine: str, shape: Shape) -> Optional[WarmContainer]:
        """The oldest warm container of ``shape`` on ``engine``, out of the pool, for a job
        (the caller counts a hit in :attr:`hits` once it serves one)."""
        for container in self.ready[engine]:
            if container.shape == shape:
                self.ready[engine].remove(container)
                return container
        return None

    def give_back(self, container: WarmContainer) -> None:
        """Puts a container just taken back first in the pool (its job could not take it
        now: no submitter is idle to attach to it)."""
        self.ready[container.engine].insert(0, container)

    def discard(self, container: WarmContainer) -> None:
        """Takes a started container out of the pool (it died, or is removed)."""
        if container in self.ready[container.engine]:
            self.ready[container.engine].remove(container)

    def by_fd(self, fd: int) -> Optional[WarmContainer]:
        return next((w for ready in self.ready.values() for w in ready if w.fd == fd), None)

    def fds(self) -> List[int]:
        """The attaches of the started containers (one that is readable died, or wrote)."""
        return [w.fd for ready in self.ready.values() for w in ready if w.fd is not None]

    # -- removals ------------------------------------------------------------------------
    def expired(self, now: float) -> List[WarmContainer]:
        """The containers unused for ``warm_idle``, out of the pool."""
        gone = [w for e, ready in self.ready.items() for w in ready
                if now - w.since >= self.idle[e]]
        for container in gone:
            self.discard(container)
        return gone

    def next_due(self) -> Optional[float]:
        """When the next container expires (monotonic seconds), if one waits."""
        return min((w.since + self.idle[e] for e, ready in self.ready.items() for w in ready),
                   default=None)

    def evict(self, engine: str, keep: Optional[Shape]) -> Optional[WarmContainer]:
        """The oldest container on ``engine`` not of shape ``keep``, out of the pool, to make
        room for a job of another shape."""
        for container in self.ready[engine]:
            if container.shape != keep:
                self.discard(container)
                return container
        return None

    def drop(self, engine: Optional[str] = None) -> List[WarmContainer]:
        """Every started container of ``engine`` (None: of all), out of the pool."""
        engines = [engine] if engine is not None else list(self.ready)
        gone = [w for e in engines for w in self.ready[e]]
        for e in engines:
            self.ready[e] = []
        return gone
