"""Building the images of a containers directory on engines (SPEC §8).

Called by :meth:`backend.JobManager.build_images` (in the caller's thread, and by the
constructor with ``build_containers_on_start``); each build goes through
:func:`backend._docker.build_image`.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence

from backend import _docker
from backend._config import InstanceConfig

logger = logging.getLogger("backend")


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
            _docker.connect(config).close()
        except _docker.DockerFailure as failure:
            logger.error("cannot build images on %s: %s", config.name, failure.text)
            for name in names:
                report[config.name][config.container_prefix + name] = failure.text
            continue
        for name in names:  # none when folder is None
            assert folder is not None
            tag = config.container_prefix + name
            error = _docker.build_image(config, os.path.join(folder, name), tag)
            if error:
                logger.error("building %s on %s failed: %s", tag, config.name, error)
            else:
                logger.info("built %s on %s", tag, config.name)
            report[config.name][tag] = error
    return report
