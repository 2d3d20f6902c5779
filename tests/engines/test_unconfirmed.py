"""Containers the engine creates without our hearing of it: the submitter dies while the engine
creates its container, or the engine's answer to the create is lost. A proxy in front of a real
engine makes either happen on purpose: it lets the create through, then holds or drops the
engine's answer."""
import os
import signal
import socket
import threading

import docker
import pytest

from backend import JobManager
from helpers import PREFIX, Proxy, ok_script, shell, wait_for

CREATE = b"POST /v1.41/containers/create"
REMOVE_BY_NAME = b"DELETE /v1.41/containers/backend-"


class CreateProxy(Proxy):
    """A proxy to an engine that interferes with the first container create.

    Modes: ``"hold"``, the engine's answer is held (the client waits until it is killed);
    ``"drop"``, the connection is dropped once the engine has answered (the client hears
    nothing); ``"delay"``, the request itself is held until :attr:`release` is set, then sent
    to the engine whatever became of the client.
    """

    def __init__(self, engine_url: str, mode: str):
        self.mode = mode
        self.requested = threading.Event()  # the create we interfere with reached the proxy
        self.release = threading.Event()    # "delay": send it on to the engine now
        self.created = threading.Event()    # the engine answered it
        self.removal_tried = threading.Event()  # a removal by name went to the engine
        self.claimed = False
        self.answer = b""  # the status line of the engine's answer to that create
        super().__init__(engine_url)

    def pair(self, client, upstream):
        state = {"create": False}
        self.thread(self._interfere, client, upstream, state, True)
        self.thread(self._interfere, upstream, client, state, False)

    def _interfere(self, source, target, state, to_engine):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                if not state["create"] or self.mode != "delay":  # "delay": the engine
                    try:                                         # must not see the end
                        target.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return
            if to_engine and REMOVE_BY_NAME in data:
                self.removal_tried.set()
            if to_engine and CREATE in data:
                with self.lock:
                    state["create"] = not self.claimed
                    self.claimed = True
                if state["create"]:
                    self.requested.set()
                    if self.mode == "delay":
                        self.release.wait(60)
            if not to_engine and state["create"]:
                state["create"] = self.mode == "delay"
                self.answer = data.split(b"\r\n", 1)[0]
                self.created.set()
                if self.mode == "drop":
                    for end in (source, target):
                        try:
                            end.shutdown(socket.SHUT_RDWR)  # wakes the other pump too
                        except OSError:
                            pass
                    return
                if self.mode == "hold":
                    continue  # the answer never comes
            try:
                target.sendall(data)
            except OSError:
                if to_engine:
                    return
                continue  # "delay": the client is gone; the engine goes on

    def close(self):
        self.release.set()
        super().close()


def _containers(engine, label):
    with docker.APIClient(base_url=engine.url, version="1.41") as client:
        return client.containers(all=True, filters={"label": label})


def _proxied(proxy, **options):
    return {"server_url": proxy.url, "name": "p1", "container_prefix": PREFIX,
            "time_between_polls": 0.2, **options}


def _kill_the_submitter_of(manager, future):
    """SIGKILLs the submitter that is starting ``future``'s job; returns the job's result."""
    [holder] = [w for w in manager._dispatcher.supervisor.submitters
                if getattr(w.holding, "job_id", None) == future.job_id]
    os.kill(holder.process.pid, signal.SIGKILL)
    result = future.result(timeout=30)
    assert result["result"] == "crash" and result["run"]["reason"] == "start_failed"
    return result


@pytest.fixture
def proxy(request, engines):
    """A :class:`CreateProxy` to e1, in the mode the test gives with ``indirect``."""
    created = CreateProxy(engines[0].url, request.param)
    yield created
    created.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("proxy", ["hold"], indirect=True)
def test_a_submitter_killed_while_the_engine_creates_leaves_no_container(engines, proxy):
    with JobManager([_proxied(proxy)]) as manager:
        future = manager.submit(shell(ok_script()), 1)
        assert proxy.created.wait(30), "the create never reached the engine"
        label = f"backend.manager={manager.manager_id}"
        [made] = _containers(engines[0], label)  # made, but its id never reached us
        assert made["Names"] == [f"/backend-{future.job_id}-1"]
        _kill_the_submitter_of(manager, future)
        wait_for(lambda: not _containers(engines[0], label), 15,
              "the container of the killed submitter was not removed")
        # the manager goes on
        assert manager.submit(shell(ok_script()), 2).result(timeout=30)["result"] == "success"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("proxy", ["drop"], indirect=True)
def test_a_lost_answer_to_a_create_leaves_no_container(engines, proxy):
    instances = [_proxied(proxy, max_concurrent_jobs=1),
                 {"server_url": engines[1].url, "name": "e2", "container_prefix": PREFIX,
                  "time_between_polls": 0.2, "max_concurrent_jobs": 1}]
    with JobManager(instances) as manager:
        # both are free: the tie goes to the first one, p1
        future = manager.submit(shell(ok_script()), 1)
        assert proxy.created.wait(30), "the create never reached the engine"
        result = future.result(timeout=30)
        # placed again on the other engine, under its second name
        assert result["result"] == "success" and result["run"]["host"] == "e2", result
        label = f"backend.manager={manager.manager_id}"
        wait_for(lambda: not _containers(engines[0], label), 15,
              "the container whose create was not answered was not removed")
        # p1 never stopped answering: its waiter saw nothing, was asked, and said so
        wait_for(lambda: manager._dispatcher.placement.is_reachable("p1"), 10,
              "p1 was not used again")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("proxy", ["delay"], indirect=True)
def test_a_container_created_after_its_killed_submitter_was_cleaned_up_is_removed(engines,
                                                                                   proxy):
    with JobManager([_proxied(proxy)]) as manager:
        future = manager.submit(shell(ok_script()), 1)
        assert proxy.requested.wait(30), "the create never reached the proxy"
        _kill_the_submitter_of(manager, future)
        assert proxy.removal_tried.wait(15), "no removal by name"  # it finds nothing
        proxy.release.set()  # the engine creates it only now
        assert proxy.created.wait(15) and b" 201 " in proxy.answer, proxy.answer
        label = f"backend.manager={manager.manager_id}"
        wait_for(lambda: not _containers(engines[0], label), 15,
              "a container created after the first removal was not removed")
