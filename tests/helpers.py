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
