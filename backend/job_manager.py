"""The JobManager: the facade users call (docs/quickstart.rst).

``new_job`` validates the task and input, runs the task's local check in the caller's thread,
and hands the job either to the dispatcher (see :mod:`backend.dispatch._dispatcher`), which places it on
the least-loaded engine and drives the submitter pool and the waiters, or straight to the done
queue when no container is needed. Callback manager threads (:mod:`backend._callback_manager`)
then deliver every result in this process. The JobManager talks to the dispatcher only with
the commands of :mod:`backend.ipc._messages` (``NewJob``, ``KillJob``, ``KillAll``, ``Close``).
"""
from __future__ import annotations

import atexit
import json
import logging
import multiprocessing
import os
import queue
import socket
import threading
import uuid
import weakref
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from backend import docker, model, _submitter, _waiter
from backend._callback_manager import CallbackThreads, _CallbackManager
from backend.model import (InstanceConfig, Job, JobSpec, JobState, LocalCheck, Result,
                           TaskSnapshot, check_files, load_config, parse_instances, snapshot_task)
from backend.dispatch import ChildMains, Dispatcher, Stats
from backend.ipc import Close, KillAll, KillJob, NewJob, RemoveContainer

logger = logging.getLogger("backend")

#: What the children run: the submitter's and the waiter's entry points.
CHILD_MAINS = ChildMains(_submitter.submitter_main, _waiter.waiter_main)

Callback = Callable[[str, Any, Result], Any]


class _JobFuture(Future[Result]):
    """The future of one job's result (:meth:`JobManager.submit`). Its ``result()`` and
    ``exception()``, called from a callback of the same manager while no other callback
    thread is free to deliver the result, raise ``RuntimeError`` instead of waiting."""

    job_id: str

    def __init__(self, threads: CallbackThreads):
        super().__init__()
        self._threads = threads

    def result(self, timeout: Optional[float] = None) -> Result:
        if not self.done():
            self._threads.check("Future.result()")
        return super().result(timeout)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        if not self.done():
            self._threads.check("Future.exception()")
        return super().exception(timeout)


class JobManager:
    """Runs jobs in containers spread over Docker engines, and calls back with their results.

    Args:
        docker_instances: the engines, a list of dicts (docs/configuration.rst).
        containers_directory: folder with one sub-folder (holding a ``Dockerfile``) per
            environment.
        tasks_directory: folder that relative ``task.directory`` paths resolve against.
        callback_manager_count: threads that call the callbacks.
        process_pool_size: submitter processes (default: 2 per core, at least 2, at most 8).
        max_queued_jobs: jobs that may wait for a free slot; a job beyond ends at once with
            ``"crash"`` (reason ``over_capacity``). ``None``: no limit.
        start_method: ``"forkserver"`` (default) or ``"spawn"``.

    Raises:
        ValueError: a bad configuration value, named in the message.
        TypeError: an argument of the wrong type.
    """

    def __init__(self, docker_instances: List[Dict[str, Any]],
                 containers_directory: Optional[str] = None,
                 tasks_directory: Optional[str] = None, callback_manager_count: int = 1,
                 process_pool_size: Optional[int] = None, *,
                 max_queued_jobs: Optional[int] = None, start_method: str = "forkserver"):
        self._configs = parse_instances(docker_instances)
        _check_arguments(callback_manager_count, process_pool_size, max_queued_jobs,
                         containers_directory, tasks_directory, start_method)
        self.containers_directory = containers_directory
        self.tasks_directory = tasks_directory
        self.manager_id = uuid.uuid4().hex[:16]
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Condition()
        self._last_snapshot: Optional[TaskSnapshot] = None
        self._pending: Dict[str, Job] = {}
        self._closed = False
        self._close_started = False
        self._done_queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            context.set_forkserver_preload(["backend._submitter", "backend._waiter"])
        if process_pool_size is None:
            process_pool_size = min(8, max(2, 2 * (os.cpu_count() or 1)))
        self._stats = Stats(self._configs)
        self._dispatcher = Dispatcher(context, self._configs, self.manager_id, self._owner,
                                       process_pool_size, self._done_queue, max_queued_jobs,
                                       self._stats, mains=CHILD_MAINS)
        self._callback_threads = CallbackThreads(callback_manager_count)
        self._callback_managers = [
            _CallbackManager(i, self._done_queue, self._remove_container, self._delivered,
                             self._stats.ended, self._callback_threads)
            for i in range(callback_manager_count)]
        if any(i.build_containers_on_start for i in self._configs):
            self.build_images([i.name for i in self._configs if i.build_containers_on_start])
        self._dispatcher.start_children()
        self._dispatcher.start()
        for thread in self._callback_managers:
            thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))
        logger.info("JobManager %s started on %s", self.manager_id,
                    ", ".join(i.name for i in self._configs))

    @classmethod
    def from_env(cls, **kwargs: Any) -> "JobManager":
        """Builds a JobManager on the engine the docker CLI would use: ``DOCKER_HOST`` (with
        ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH``), else the current docker context,
        else the local socket (see :doc:`/engines`). ``kwargs`` are the constructor's other
        arguments; ``instance`` (a dict of ``docker_instances`` keys, such as
        ``container_prefix``) is added to the engine's entry.

        Raises:
            ValueError: the current context does not exist or cannot be read, or a value is
                wrong.
        """
        if "docker_instances" in kwargs:
            raise TypeError("from_env() takes the engine from the environment: give "
                            "docker_instances to JobManager() instead")
        extra = kwargs.pop("instance", None) or {}
        engine = model.resolve()
        return cls([dict(engine.instance, **extra)], **kwargs)

    @classmethod
    def from_config(cls, path_or_dict: Any) -> "JobManager":
        """Builds a JobManager from a JSON file or a dict with the keys ``docker_instances``,
        ``containers_directory``, ``tasks_directory``, ``callback_managers_threads``,
        ``submitters_processes`` (and ``max_queued_jobs``)."""
        return cls(**load_config(path_or_dict))

    # -- jobs ----------------------------------------------------------------------------
    def new_job(self, task: Any, inputdata: Any, callback: Callback, *,
                files: Optional[Mapping[str, Any]] = None) -> str:
        """Submits a job; ``callback(job_id, task, result)`` is called once when it ends.

        Never blocks on Docker. ``inputdata`` is JSON-serialisable, or a raw task's whole stdin
        (``bytes``, ``str`` or ``None``); ``files``, ``{relative path: bytes or str}``, are
        written into the job's working directory before it starts (docs/running-programs.rst).

        Returns:
            The job id.

        Raises:
            RuntimeError: the manager is closed.
            TypeError: ``task`` is not a task, ``inputdata`` cannot be sent, ``callback``
                is not callable, or a file's content is not bytes or str.
            ValueError: a wrong value of the task, or a bad file path (the message names
                the rule it breaks), or files over 64 MiB in all.
        """
        if not callable(callback):
            raise TypeError("callback must be callable: callback(job_id, task, result)")
        return self._new_job(task, inputdata, callback, files)

    def submit(self, task: Any, inputdata: Any, *,
               files: Optional[Mapping[str, Any]] = None) -> Future:
        """Like :meth:`new_job`, but returns a :class:`concurrent.futures.Future` of the
        result, with the attribute ``job_id``. Use :meth:`kill_job` to stop it."""
        future = _JobFuture(self._callback_threads)
        future.set_running_or_notify_cancel()
        future.job_id = self._new_job(
            task, inputdata, lambda job_id, task, result: future.set_result(result), files)
        return future

    def _new_job(self, task: Any, inputdata: Any, callback: Callback,
                 files: Optional[Mapping[str, Any]] = None) -> str:
        if self._closed:
            raise RuntimeError("this JobManager is closed")
        snapshot = snapshot_task(task, self.tasks_directory)
        last = self._last_snapshot
        if snapshot == last:
            snapshot = last  # a batch of one task holds one copy of it, not one per job
        else:
            self._last_snapshot = snapshot
        job = _make_job(task, snapshot, inputdata, callback, files)
        with self._lock:
            if self._closed:
                raise RuntimeError("this JobManager is closed")
            self._pending[job.job_id] = job
        self._stats.submitted()
        if job.spec is None:
            self._done_queue.put(job)
        else:
            self._dispatcher.post(NewJob(job))
        return job.job_id

    def kill_job(self, job_id: str) -> bool:
        """Kills a job; it ends with the result ``"killed"``.

        Returns:
            ``True`` if the job was still waiting or running, ``False`` otherwise.
        """
        with self._lock:
            job = self._pending.get(job_id)
        if job is None or job.state is JobState.DONE:
            return False
        self._dispatcher.post(KillJob(job_id))
        return True

    def _check_can_wait(self, call: str) -> None:
        """Raises ``RuntimeError`` when ``call``, which waits for a result of this manager,
        is made from a callback that leaves no callback thread free to deliver it (the
        wrappers' blocking calls; see :class:`~backend._callback_manager.CallbackThreads`)."""
        self._callback_threads.check(call)

    def get_waiting_jobs_count(self) -> int:
        """Jobs submitted whose callback has not run yet (queued and running)."""
        with self._lock:
            return len(self._pending)

    def stats(self) -> Dict[str, Any]:
        """Counters and latencies of this manager (docs/quickstart.rst), JSON-serialisable; cheap, from
        any thread. Keys: ``jobs`` (``submitted``, ``queued``, ``running``, ``ended``,
        ``by_status``, ``by_reason`` per status), ``engines`` (per engine: ``reachable``,
        ``running`` (this manager's), ``engine_running`` (every manager's, counted from the
        engine), ``managers``, ``capacity`` (None: no limit), ``warm_containers`` (started
        or starting, docs/performance.rst, warm starts), ``warm_hits`` (jobs served warm)), ``queue_wait`` and
        ``run_time`` (``p50``, ``p95`` in seconds over the last 1000 jobs, ``count``; and
        since the start, for histograms: ``buckets``, a list of ``[upper bound, jobs at or
        below it]``, ``sum`` and ``total``). See :doc:`/engines` and :doc:`/operations`
        (:mod:`backend.metrics` exposes them to Prometheus)."""
        return self._stats.snapshot()

    def _remove_container(self, engine: str, container_id: str) -> None:
        self._dispatcher.post(RemoveContainer(engine, container_id))

    def _delivered(self, job: Job) -> None:
        with self._lock:
            self._pending.pop(job.job_id, None)
            self._lock.notify_all()

    # -- images --------------------------------------------------------------------------
    def get_container_names(self) -> List[str]:
        """Folders of ``containers_directory`` that hold a ``Dockerfile``, sorted."""
        folder = self.containers_directory
        if folder is None:
            return []
        return sorted(name for name in os.listdir(folder)
                      if os.path.isfile(os.path.join(folder, name, "Dockerfile")))

    def build_images(self, instances: Optional[List[str]] = None
                     ) -> Dict[str, Dict[str, Optional[str]]]:
        """Builds every image of ``containers_directory`` on each instance (all by default).

        A build error is logged with the engine's message; it does not raise.

        Returns:
            ``{instance_name: {image_tag: None or error text}}``.
        """
        return build_all(self._configs, self.containers_directory, self.get_container_names(),
                         instances)

    # -- shutdown ------------------------------------------------------------------------
    def close(self, wait: bool = True) -> None:
        """Stops the manager: no new jobs; running jobs finish (``wait=True``) or are killed
        (``wait=False``); every callback is delivered, every container removed, every process
        and thread ended. A second call does nothing. Called from inside a callback, it starts
        the shutdown and returns; the shutdown completes when the callback returns."""
        with self._lock:
            self._closed = True
            if self._close_started:
                return
            self._close_started = True
        if not wait:
            self._dispatcher.post(KillAll())
        if threading.current_thread() in self._callback_managers:
            threading.Thread(target=self._finish_close, name="backend-close").start()
        else:
            self._finish_close()

    def _finish_close(self) -> None:
        with self._lock:
            while self._pending and self._dispatcher.is_alive():
                self._lock.wait(0.5)
        self._dispatcher.post(Close())
        self._dispatcher.join()
        for _ in self._callback_managers:
            self._done_queue.put(None)
        for thread in self._callback_managers:
            if thread is not threading.current_thread():
                thread.join()
        logger.info("JobManager %s closed", self.manager_id)

    def __enter__(self) -> "JobManager":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close(wait=exc_info[0] is None)


def build_all(configs: Sequence[InstanceConfig], folder: Optional[str], names: List[str],
              instances: Optional[List[str]] = None) -> Dict[str, Dict[str, Optional[str]]]:
    """Builds the images ``names`` (sub-folders of ``folder``) on each engine of ``configs``
    (those named in ``instances``, or all); a failure is logged with the engine's message.

    Returns:
        ``{instance_name: {image_tag: None or error text}}``.
    """
    report: Dict[str, Dict[str, Optional[str]]] = {}
    for config in configs:
        if instances is not None and config.name not in instances:
            continue
        report[config.name] = {}
        try:
            docker.connect(config).close()
        except docker.DockerFailure as failure:
            logger.error("cannot build images on %s: %s", config.name, failure.text)
            for name in names:
                report[config.name][config.container_prefix + name] = failure.text
            continue
        for name in names:  # none when folder is None
            assert folder is not None
            tag = config.container_prefix + name
            error = docker.build_image(config, os.path.join(folder, name), tag)
            if error:
                logger.error("building %s on %s failed: %s", tag, config.name, error)
            else:
                logger.info("built %s on %s", tag, config.name)
            report[config.name][tag] = error
    return report


def _check_arguments(callback_manager_count: int, process_pool_size: Optional[int],
                     max_queued_jobs: Optional[int], containers_directory: Optional[str],
                     tasks_directory: Optional[str], start_method: str) -> None:
    """The JobManager's arguments but its engines; a wrong one raises ValueError naming it."""
    for name, value, least in (("callback_manager_count", callback_manager_count, 1),
                               ("process_pool_size", process_pool_size, 1),
                               ("max_queued_jobs", max_queued_jobs, 0)):
        if value is None and name != "callback_manager_count":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be a whole number of at least {least}, "
                             f"not {value!r}")
    for name, folder in (("containers_directory", containers_directory),
                         ("tasks_directory", tasks_directory)):
        if folder is not None and not os.path.isdir(folder):
            raise ValueError(f"{name} {folder!r} is not a folder")
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method must be 'forkserver' or 'spawn', not "
                         f"{start_method!r}")


def _make_job(task: Any, snapshot: TaskSnapshot, inputdata: Any, callback: Callback,
              files: Optional[Mapping[str, Any]]) -> Job:
    """A new job's record, checked in the caller's thread (its files, its input, its local
    check): whatever is wrong raises here, and no job exists."""
    job_id = uuid.uuid4().hex
    checked_files = check_files(files)
    stdin = _stdin(snapshot, inputdata, job_id)
    local = task.check_answer(inputdata)
    if not isinstance(local, LocalCheck):
        raise TypeError(f"task.check_answer() must return a LocalCheck, not "
                        f"{type(local).__name__}")
    spec: Optional[JobSpec] = None
    if local.need_container:
        if snapshot.environment is None:
            raise ValueError("the local check needs a container, but task.environment is None")
        spec = JobSpec(job_id=job_id, task=snapshot, stdin=stdin, files=checked_files)
    # a job that needs no container is done already: no thread changes it
    return Job(job_id, task, callback, local, spec,
               JobState.QUEUED if spec is not None else JobState.DONE)


def _stdin(snapshot: TaskSnapshot, inputdata: Any, job_id: str) -> bytes:
    """A job's stdin: the JSON line of docs/protocol.rst, or a raw job's input as it is (docs/running-programs.rst).

    Raises:
        TypeError: the input cannot be sent.
    """
    if snapshot.protocol == "raw":
        if inputdata is None:
            return b""
        if isinstance(inputdata, str):
            return inputdata.encode("utf-8")
        if isinstance(inputdata, (bytes, bytearray, memoryview)):
            return bytes(inputdata)
        raise TypeError(f"a raw job's inputdata is its stdin: bytes, str or None, not "
                        f"{type(inputdata).__name__}")
    try:
        line = json.dumps({"input": inputdata, "limits": snapshot.limits, "job_id": job_id},
                          ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"inputdata must be JSON-serialisable: {error}") from None
    return line.encode("utf-8") + b"\n"


def _close_at_exit(reference: "weakref.ref[JobManager]") -> None:
    """At interpreter exit, a manager that was not closed kills its jobs and cleans up."""
    manager = reference()
    if manager is not None and not manager._close_started:
        manager.close(wait=False)
