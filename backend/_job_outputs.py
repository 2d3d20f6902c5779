"""A job's outputs (SPEC §9): the files it left, read from its ended container.

Called by a waiter's main loop (:meth:`backend._waiter._Waiter.finish`) once a container has
ended, also after a kill or a limit, before its result is reported: each output path is read
through the engine's archive API (``GET /containers/{id}/archive``, so remote and TLS engines
work as local ones), within ``limits["output"]`` bytes in all
(:class:`backend._files.OutputsReader`; every entry costs its name and
:data:`~backend._files.ENTRY_COST` bytes too, so that 300,000 empty files cost no more than
the limit). A missing output is simply absent; an engine that fails while answering costs the
outputs not read yet, never the job's result.
"""
from __future__ import annotations

import logging
import posixpath
import tarfile
from typing import Any, Callable, Dict, Optional

from backend import _docker
from backend._files import OutputsReader
from backend._messages import Outputs

logger = logging.getLogger("backend")


def add_outputs(result: Dict[str, Any], connected: Callable[[], _docker.Engine],
                container_id: str, outputs: Optional[Outputs], budget: int) -> Dict[str, Any]:
    """Reads the ``outputs`` of the ended container into ``result`` (``result["files"]``,
    ``result["run"]["files_left_out"]``), within ``budget`` bytes; returns ``result``
    (unchanged when there are no outputs)."""
    if outputs is None:
        return result
    reader = OutputsReader(budget)
    try:
        engine = connected()
        workdir = outputs.workdir
        if workdir is None:  # the image's
            workdir = engine.inspect(container_id)["Config"].get("WorkingDir") or "/"
        for path in outputs.paths:
            try:
                archive = engine.get_archive(container_id, posixpath.join(workdir, path))
            except _docker.DockerFailure as failure:
                if failure.not_found:
                    continue  # not written: absent
                raise
            try:
                reader.read(path, archive)
            except (tarfile.TarError, ValueError, EOFError) as error:  # not a tar we read
                logger.warning("the output %s of %s could not be read: %s", path,
                               container_id, error)
            finally:
                archive.close()
    except _docker.DockerFailure as failure:
        logger.warning("the outputs of %s could not all be read: %s", container_id,
                       failure.text)
    except (KeyError, TypeError) as error:  # an inspect without its Config
        logger.warning("the outputs of %s: an unexpected answer (%s)", container_id, error)
    reader.add_to(result)
    return result
