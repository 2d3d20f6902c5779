"""The dispatcher: the one thread of the JobManager's process that talks to its children.

Data flow (one arrow per pipe; every pipe has exactly one reader and one writer, so a process
that dies never leaves a lock held)::

  JobManager.new_job ──commands──▶ dispatcher thread ──("submit", …)──▶ submitter processes
                                     ▲      │    ◀──("created"|"started"|"failed", …)──┘
                                     │      ├──("watch"|"kill"|"probe", …)──▶ waiter processes
                                     │      │    ◀──("done"|"engine", …)──┘  (per instance)
                                     │      ▼
          ("delete", …) ── callback managers ◀── done queue (queue.Queue of ended _Jobs)

The dispatcher owns all placement state: the FIFO of jobs waiting for a slot, the running count
of every instance, which submitter holds which job and which waiter watches which container.
It does one :func:`multiprocessing.connection.wait` over a wake-up pipe, every child's pipe and
every child's sentinel. A child that dies is replaced at once; the jobs it held end exactly once
(a submitter's job: ``crash``/``start_failed``, and its container is removed by the name it was
given, whether or not its creation was confirmed), or are handed to the replacement (a waiter's
containers, recovered from the engine).

Containers are removed by submitters too, off the jobs' critical path. A removal that fails
because the engine does not answer waits until a waiter reports the engine back; at close,
once every job ended, each engine is asked for any container of this manager still there.

A job ends in exactly one place, :meth:`_Dispatcher._end`, which frees its slot before the
result goes to the done queue: a slow callback never holds an engine slot.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing import reduction
from multiprocessing.connection import wait
from typing import Any, Callable, Deque, Dict, List, Optional, Set

from backend import _docker, _submitter, _waiter
from backend._child import is_running, start_process
from backend._config import InstanceConfig
from backend._results import failure_result
from backend._submitter import _JobSpec
from backend._task import LocalCheck

logger = logging.getLogger("backend")

#: Engines a job is tried on when its engine does not answer, at most.
PLACEMENT_TRIES = 3
#: Attempts to remove a container before leaving it to the next start's sweep.
DELETE_TRIES = 6
#: Seconds after which a container whose creation was not confirmed is removed by name again.
UNCONFIRMED_REMOVALS = (2.0, 10.0, 60.0)
#: Seconds the children get to exit at shutdown before TERM, then as long before KILL.
STOP_GRACE = 5.0


@dataclass(eq=False)
class _Job:
    """The JobManager's record of one job. Only the dispatcher thread changes it, until it is
    put on the done queue; the callback manager reads it afterwards."""

    job_id: str
    task: Any
    callback: Callable
    local: LocalCheck
    spec: Optional[_JobSpec]
    instance: Optional[str] = None
    container_id: Optional[str] = None
    container_name: Optional[str] = None  # of the current attempt, known before creation
    tries: int = 0
    failed_on: Set[str] = field(default_factory=set)  # instances that did not answer for it
    kill_requested: bool = False
    started_at: Optional[float] = None
    result: Optional[Dict[str, Any]] = None
    state: str = "queued"  # queued, submitting, running, done


class _Child:
    """A child process with its end of the pipe, and what it holds."""

    def __init__(self, kind: str, process, connection, instance: Optional[str] = None):
        self.kind = kind
        self.process = process
        self.connection = connection
        self.instance = instance
        self.holding: Any = None          # submitter: the _Job or deletion in progress
        self.jobs: Dict[str, _Job] = {}   # waiter: the jobs it watches
        #: its sentinel came from a forkserver that died: the child runs on, and the end of
        #: file on its pipe is what tells its death
        self.orphaned = False
        self.pipe_closed = False
        #: a send to it failed: it died and its sentinel is not seen yet; it gets no more work
        self.broken = False

    def send(self, message) -> bool:
        """Sends ``message``; False (and ``broken``) if the child is gone. Its death is
        handled where its sentinel or pipe says so; what it holds is dealt with there."""
        try:
            self.connection.send(message)
            return True
        except (OSError, ValueError) as error:
            logger.debug("%s process %s does not read its pipe: %s", self.kind,
                         self.process.pid, error)
            self.broken = True
            return False

    def is_running(self) -> bool:
        """Whether the process still runs (looked up by pid: a dead forkserver leaves
        ``process.is_alive()`` saying no for children that are alive)."""
        return is_running(self.process.pid)


@dataclass
class _Instance:
    config: InstanceConfig
    running: int = 0
    reachable: bool = True
    waiters: List[_Child] = field(default_factory=list)
    #: containers (ids or names) to remove, and ``("sweep",)``/``("leftovers",)`` by label;
    #: held while the instance is unreachable
    deletions: List[Any] = field(default_factory=list)


def _end_orphan(child: "_Child", deadline: float) -> None:
    """Waits for a child whose forkserver died to exit (it was told to), then TERM, KILL."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            try:
                os.kill(child.process.pid, sig)
            except OSError:
                return
            deadline = time.monotonic() + STOP_GRACE
        while child.is_running() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not child.is_running():
            return


def _receive_fd(connection) -> Optional[int]:
    """The file descriptor a child sent after its message, or None if it died meanwhile."""
    try:
        return reduction.recv_handle(connection)
    except (EOFError, OSError, RuntimeError) as error:
        logger.debug("no output stream received: %s", error)
        return None


class _Dispatcher(threading.Thread):
    """See the module docstring. Thread-safe entry point: :meth:`post`."""

    def __init__(self, context, instances: List[InstanceConfig], manager_id: str, owner: str,
                 pool_size: int, done_queue, max_queued_jobs: Optional[int]):
        super().__init__(name="backend-dispatcher", daemon=True)
        self.context = context
        self.configs = instances
        self.instances = {config.name: _Instance(config) for config in instances}
        self.manager_id = manager_id
        self.owner = owner
        self.pool_size = pool_size
        self.done_queue = done_queue
        self.max_queued_jobs = max_queued_jobs
        self.log_level = logging.getLogger("backend").getEffectiveLevel()
        # children read end of file here when this process dies (see _child.exit_with_parent)
        self.lifeline, self.lifeline_writer = context.Pipe(duplex=False)
        self.commands: Deque = collections.deque()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.jobs: Dict[str, _Job] = {}
        self.queue: Deque[_Job] = collections.deque()
        self.workers: List[_Child] = []
        self.retries: List = []           # (due, instance, container, unconfirmed) to remove
        self.deletion_tries: Dict[str, int] = {}
        self.tie_breaker = itertools.count()
        self.closing = False              # stop once every job ended and deletions are done
        self.close_deadline = 0.0         # ... or give up retrying deletions after this
        self.leftovers_checked = False    # closing: each engine was asked for our containers
        self.stopping = False
        self.failure: Optional[BaseException] = None

    # -- thread-safe API -----------------------------------------------------------------
    def post(self, command) -> None:
        """Queues a command for the dispatcher thread and wakes it."""
        self.commands.append(command)
        try:
            os.write(self.wake_w, b"!")
        except (BlockingIOError, OSError):
            pass

    # -- children ------------------------------------------------------------------------
    def start_children(self) -> None:
        """Starts the submitter pool and the waiters (called before the thread starts)."""
        for _ in range(self.pool_size):
            self.workers.append(self._start_worker())
        for instance in self.instances.values():
            for _ in range(instance.config.waiters):
                instance.waiters.append(self._start_waiter(instance.config))
        for name in self.instances:
            self.post(("sweep", name))

    def _start_worker(self) -> _Child:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=_submitter.worker_main, name="backend-submitter", daemon=True,
            args=(theirs, self.configs, self.manager_id, self.owner, self.log_level,
                  self.lifeline))
        start_process(process)
        theirs.close()
        return _Child("submitter", process, ours)

    def _start_waiter(self, config: InstanceConfig) -> _Child:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=_waiter.waiter_main, name=f"backend-waiter-{config.name}", daemon=True,
            args=(theirs, config, self.manager_id, self.log_level, self.lifeline))
        start_process(process)
        theirs.close()
        return _Child("waiter", process, ours, config.name)

    def children(self) -> List[_Child]:
        return self.workers + [w for i in self.instances.values() for w in i.waiters]

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # noqa: BLE001 - must reach someone: logged, then
            self.failure = error        # every pending job ends with a crash result
            logger.exception("the JobManager's dispatcher failed")
            for job in list(self.jobs.values()):
                self._end(job, failure_result("start_failed", f"internal error: {error!r}",
                                              job.instance, job.container_id))
        finally:
            self._stop_children()

    def _loop(self) -> None:
        while not self.stopping:
            children = self.children()
            waitables = [self.wake_r]
            for child in children:
                waitables.append(child.connection)
                if not child.orphaned:
                    waitables.append(child.process.sentinel)
            ready = set(wait(waitables, timeout=self._next_timeout()))
            if self.wake_r in ready:
                os.read(self.wake_r, 65536)
            while self.commands:
                self._command(self.commands.popleft())
            for child in children:
                if child.connection in ready:
                    self._read(child)
            for child in children:
                if not child.orphaned and child.process.sentinel in ready:
                    if child.is_running():
                        # its forkserver died: it goes on; its pipe's end tells its death
                        logger.info("%s process %s outlived its forkserver", child.kind,
                                    child.process.pid)
                        child.orphaned = True
                        continue
                    self._read(child)  # what it said before dying counts
                    self._replace(child)
                elif child.orphaned and child.pipe_closed:
                    self._replace(child)
            self._retry_deletions()
            self._schedule()

    def _next_timeout(self) -> Optional[float]:
        dues = [due for due, *_ in self.retries]
        if self.closing:
            dues.append(self.close_deadline)
        if not dues:
            return None
        return max(0.0, min(dues) - time.monotonic())

    def _read(self, child: _Child) -> None:
        try:
            while child.connection.poll():
                message = child.connection.recv()
                if child.kind == "submitter":
                    self._from_submitter(child, message)
                else:
                    self._from_waiter(child, message)
        except EOFError:
            child.pipe_closed = True
        except OSError:
            pass

    # -- commands from other threads -----------------------------------------------------
    def _command(self, command) -> None:
        kind = command[0]
        if kind == "job":
            job = command[1]
            self.jobs[job.job_id] = job
            self.queue.append(job)
            self._schedule()
            if (self.max_queued_jobs is not None and job.state == "queued"
                    and len(self.queue) > self.max_queued_jobs):
                self.queue.remove(job)
                self._end(job, failure_result(
                    "over_capacity", f"the system is over capacity: {self.max_queued_jobs} "
                    f"job(s) already wait for a free slot"))
        elif kind == "kill":
            self._kill(self.jobs.get(command[1]))
        elif kind == "kill_all":
            for job in list(self.jobs.values()):
                self._kill(job)
        elif kind == "delete":
            self.instances[command[1]].deletions.append(command[2])
        elif kind == "sweep":
            self.instances[command[1]].deletions.append(("sweep",))
        elif kind == "stop":
            self.closing = True
            self.close_deadline = time.monotonic() + 2 * STOP_GRACE

    def _kill(self, job: Optional[_Job]) -> None:
        if job is None or job.state == "done":
            return
        job.kill_requested = True
        if job.state == "queued":
            self.queue.remove(job)
            self._end(job, failure_result("killed", "The job was killed before it started."))
        elif job.state == "running":
            waiter = self._waiter_of(job)
            if waiter is not None:
                waiter.send(("kill", job.job_id))  # if it died, its replacement kills
        # submitting: the kill is forwarded with the "watch" once the container started

    # -- placement -----------------------------------------------------------------------
    def _choose(self, job: _Job) -> Optional[_Instance]:
        """The least-loaded reachable instance with a free slot. A job that an instance
        failed to start goes to another one (and waits for its slot: the failed one may be
        flapping, as an engine that restarts is), unless no other one is reachable."""
        reachable = [i for i in self.instances.values() if i.reachable]
        others = [i for i in reachable if i.config.name not in job.failed_on]
        free = [i for i in others or reachable if
                i.config.max_concurrent_jobs == 0 or i.running < i.config.max_concurrent_jobs]
        if not free:
            return None
        least = min(i.running for i in free)
        ties = [i for i in free if i.running == least]
        return ties[next(self.tie_breaker) % len(ties)]

    def _schedule(self) -> None:
        """Starts queued jobs while slots and idle submitters allow, then deletions."""
        idle = [w for w in self.workers if w.holding is None and not w.broken]
        if self.queue and not any(i.reachable for i in self.instances.values()):
            while self.queue:
                job = self.queue.popleft()
                self._end(job, failure_result("engine_unreachable", "no docker instance "
                                              "answers: " + ", ".join(self.instances)))
        while self.queue and idle:
            instance = self._choose(self.queue[0])
            if instance is None:
                break
            job = self.queue.popleft()
            self._submit(job, instance, idle.pop())
        for instance in self.instances.values():
            while idle and instance.deletions and instance.reachable:
                worker = idle.pop()
                item = instance.deletions[0]
                before = list(instance.deletions)
                if isinstance(item, tuple):  # ("sweep",) or ("leftovers",): by label
                    instance.deletions.pop(0)
                    worker.holding = (item[0], instance.config.name)
                else:
                    ids = [i for i in instance.deletions if not isinstance(i, tuple)]
                    instance.deletions = [i for i in instance.deletions if isinstance(i, tuple)]
                    worker.holding = ("delete", instance.config.name, ids)
                if not worker.send(worker.holding):
                    worker.holding = None
                    instance.deletions = before  # for another submitter
        if self.closing:
            self._close_when_done()

    def _close_when_done(self) -> None:
        """Once every job ended and its container was removed, asks each engine for the
        containers of this manager still there (none, unless something went wrong), then
        stops. Deletions that still fail (an engine down) are given up at the close
        deadline, with a warning."""
        if self.jobs or self.queue or any(w.holding for w in self.workers):
            return
        reachable = [i for i in self.instances.values() if i.reachable]
        if any(i.deletions for i in reachable):
            return
        if not self.leftovers_checked:
            self.leftovers_checked = True
            for instance in reachable:
                instance.deletions.append(("leftovers",))
            if reachable:
                self._schedule()
                return
        left = [(name, c) for _, name, c, unconfirmed in self.retries
                if not unconfirmed or not self.instances[name].reachable] + [
            (i.config.name, c) for i in self.instances.values() for c in i.deletions
            if not isinstance(c, tuple)]
        if left and time.monotonic() < self.close_deadline:
            return
        for name, container in left:
            logger.warning("could not remove container %s on %s before the close deadline; "
                           "the next JobManager start removes it", container, name)
        self.stopping = True

    def _submit(self, job: _Job, instance: _Instance, worker: _Child) -> bool:
        name = _docker.container_name(job.job_id, job.tries + 1)
        if not worker.send(("submit", instance.config.name, job.spec, name)):
            self.queue.appendleft(job)  # it never reached that submitter: another takes it
            return False
        job.state = "submitting"
        job.instance = instance.config.name
        job.container_name = name
        job.tries += 1
        instance.running += 1
        worker.holding = job
        return True

    # -- replies -------------------------------------------------------------------------
    def _from_submitter(self, worker: _Child, message) -> None:
        kind = message[0]
        if kind == "created":
            job = self.jobs.get(message[1])
            if job is not None:
                job.container_id = message[2]
            return
        stream_fd = None
        if kind == "started" and message[3]:
            stream_fd = _receive_fd(worker.connection)
        held, worker.holding = worker.holding, None
        if kind == "deleted":
            _, name, failed, reachable = message
            if held and held[0] == "delete":
                for container in set(held[2]) - set(failed):
                    self.deletion_tries.pop(container, None)
            if not reachable:
                self._mark_reachable(self.instances[name], False)
            self._deletion_failed(name, failed, reachable)
            return
        job = self.jobs.get(message[1])
        if job is None or job.state == "done":
            if stream_fd is not None:
                os.close(stream_fd)
            return
        if kind == "started":
            job.container_id = message[2]
            job.started_at = time.time()
            job.state = "running"
            waiter = min(self.instances[job.instance].waiters, key=lambda w: len(w.jobs))
            self._watch(waiter, job, stream_fd)
        elif kind == "failed":
            _, _, reason, text, container_id, retryable, maybe_created = message
            instance = self.instances[job.instance]
            instance.running -= 1
            self._remove_attempt(instance, container_id, job.container_name, maybe_created)
            if retryable:
                self._mark_reachable(instance, False)
                job.failed_on.add(instance.config.name)
            if retryable and job.tries < PLACEMENT_TRIES and not job.kill_requested \
                    and any(i.reachable for i in self.instances.values()):
                logger.info("job %s: %s; placing it again", job.job_id, text)
                job.state, job.container_id = "queued", None
                self.queue.appendleft(job)
            else:
                instance.running += 1  # _end frees the slot
                self._end(job, failure_result(reason, text, job.instance, container_id))

    def _watch(self, waiter: _Child, job: _Job, stream_fd: Optional[int] = None) -> None:
        """Hands a running job to a waiter, with its output stream when there is one (the
        waiter reads the engine's log otherwise). The stream's descriptor is closed here."""
        waiter.jobs[job.job_id] = job  # if the waiter died, its replacement is given the job
        try:
            if waiter.send(("watch", job.job_id, job.container_id, job.spec.task.limits,
                            job.started_at, job.kill_requested, stream_fd is not None)) \
                    and stream_fd is not None:
                reduction.send_handle(waiter.connection, stream_fd, waiter.process.pid)
        except OSError as error:
            logger.debug("the output stream of %s was not passed: %s", job.job_id, error)
        finally:
            if stream_fd is not None:
                os.close(stream_fd)

    def _from_waiter(self, waiter: _Child, message) -> None:
        if message[0] == "engine":
            self._mark_reachable(self.instances[message[1]], message[2], probe=False)
            return
        _, job_id, result = message
        waiter.jobs.pop(job_id, None)
        job = self.jobs.get(job_id)
        if job is not None and job.state != "done":
            self._end(job, result)

    def _mark_reachable(self, instance: _Instance, reachable: bool, probe: bool = True) -> None:
        """Records what a child saw of the instance. Jobs and deletions are sent only to a
        reachable instance; the waiters report when it answers again. When a submitter saw
        it fail, the waiters check now and report whatever they find (they may not have seen
        the failure, and so would have nothing to report)."""
        if instance.reachable == reachable:
            return
        logger.info("docker instance %s is %s", instance.config.name,
                    "reachable again" if reachable else "unreachable")
        instance.reachable = reachable
        if probe and not reachable:
            for waiter in instance.waiters:
                waiter.send(("probe",))

    def _waiter_of(self, job: _Job) -> Optional[_Child]:
        for waiter in self.instances[job.instance].waiters:
            if job.job_id in waiter.jobs:
                return waiter
        return None

    # -- ending jobs ---------------------------------------------------------------------
    def _end(self, job: _Job, result: Dict[str, Any]) -> None:
        """The one place a job ends: frees its slot and hands it to the callback managers."""
        if job.state == "done":
            return
        if job.state in ("submitting", "running") and job.instance:
            self.instances[job.instance].running -= 1
        job.state = "done"
        job.result = result
        self.jobs.pop(job.job_id, None)
        self.done_queue.put(job)

    # -- deaths --------------------------------------------------------------------------
    def _replace(self, child: _Child) -> None:
        if self.stopping:
            return
        child.connection.close()
        logger.warning("%s process %s died (exit code %s); replacing it", child.kind,
                       child.process.pid,
                       "unknown" if child.orphaned else child.process.exitcode)
        if child.kind == "submitter":
            index = self.workers.index(child)
            self.workers[index] = self._restart(self._start_worker)
            held = child.holding
            if isinstance(held, _Job) and held.state == "submitting":
                # its create may go on in the engine: the container may exist in any case
                self._remove_attempt(self.instances[held.instance], held.container_id,
                                     held.container_name, maybe_created=True)
                self._end(held, failure_result(
                    "start_failed", "the submitter process died while starting the job's "
                    "container", held.instance, held.container_id))
            elif isinstance(held, tuple):  # a deletion: tried again
                deletions = self.instances[held[1]].deletions
                if held[0] == "delete":
                    deletions.extend(held[2])
                else:
                    deletions.append((held[0],))
        else:
            instance = self.instances[child.instance]
            index = instance.waiters.index(child)
            replacement = instance.waiters[index] = self._restart(
                lambda: self._start_waiter(instance.config))
            for job in child.jobs.values():
                if job.state == "running":
                    self._watch(replacement, job)

    @staticmethod
    def _restart(start):
        """Starts a replacement child; retries briefly, as a forkserver that was just killed
        is only replaced once it has been reaped."""
        for attempt in range(20):
            try:
                return start()
            except OSError as error:
                logger.warning("starting a replacement child failed (%s); retrying", error)
                time.sleep(0.1 * (attempt + 1))
        return start()

    # -- deletions -----------------------------------------------------------------------
    def _deletion_failed(self, name: str, failed: List[str], reachable: bool) -> None:
        """Retries what could not be removed: when the engine answers again if it did not
        answer (no attempt counted), else after a back-off, :data:`DELETE_TRIES` times."""
        if not reachable:  # held until the instance answers (see _schedule)
            self.instances[name].deletions.extend(failed)
            return
        for container_id in failed:
            tries = self.deletion_tries.get(container_id, 0) + 1
            if tries >= DELETE_TRIES:
                self.deletion_tries.pop(container_id, None)
                logger.warning("could not remove container %s on %s; the next JobManager "
                               "start removes it", container_id, name)
                continue
            self.deletion_tries[container_id] = tries
            self.retries.append((time.monotonic() + 0.25 * 2 ** tries, name, container_id,
                                 False))

    def _retry_deletions(self) -> None:
        now = time.monotonic()
        due = [r for r in self.retries if r[0] <= now]
        if due:
            self.retries = [r for r in self.retries if r[0] > now]
            for _, name, container, _ in due:
                self.instances[name].deletions.append(container)

    def _remove_attempt(self, instance: _Instance, container_id: Optional[str], name: str,
                        maybe_created: bool) -> None:
        """Removes the container of a job's attempt that failed: by id when the engine
        reported it, else by name when the engine may have created it all the same."""
        if container_id:
            instance.deletions.append(container_id)
        elif maybe_created:
            self._remove_unconfirmed(instance, name)

    def _remove_unconfirmed(self, instance: _Instance, name: str) -> None:
        """Removes a container that the engine may have created without our hearing of it
        (its create went on when the submitter died, or the answer was lost), by the name it
        was given; again later, as the engine may finish creating it after a first try finds
        nothing. At close, the check for leftovers covers what is still pending."""
        instance.deletions.append(name)
        now = time.monotonic()
        for delay in UNCONFIRMED_REMOVALS:
            self.retries.append((now + delay, instance.config.name, name, True))

    # -- shutdown ------------------------------------------------------------------------
    def _stop_children(self) -> None:
        children = self.children()
        for child in children:
            try:
                child.connection.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + STOP_GRACE
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
        for child in children:
            if child.orphaned:
                _end_orphan(child, deadline)
            elif child.process.is_alive():
                child.process.terminate()
                child.process.join(STOP_GRACE)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
            child.connection.close()
            child.process.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.lifeline.close()
        self.lifeline_writer.close()
