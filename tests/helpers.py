"""Helpers shared by several test files (the fixtures are in ``conftest.py``)."""
import time
from typing import Callable


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Polls ``predicate`` until it is true; fails the test with ``what`` after ``timeout``
    seconds. For states that no event announces (an engine's container list, a flag of the
    dispatcher's thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def engine_event(action, container, manager="m1", **attributes):
    """An engine's event of a container of ``manager`` (its label ``backend.manager``), of the
    job named by the container's first three characters (its label ``backend.job``), with
    ``attributes`` (``exitCode``...)."""
    return {"Type": "container", "Action": action, "id": container, "time": 1000,
            "Actor": {"ID": container, "Attributes": {"backend.manager": manager,
                                                      "backend.job": container[:3],
                                                      **attributes}}}
