#!/usr/bin/env python3
"""A real language image for the tests, the benchmarks and the examples: a minimal Debian 12
root file system with ``python3``, built from Debian's packages with ``debootstrap`` and loaded
into an engine with ``docker import`` (the Engine API's image import).

The root file system is built once (a few minutes) and kept as a tarball under
:data:`CACHE` (``/var/cache/djm``); it is rebuilt only when missing. Loading it into an engine
that already has the tag costs one query.

Usage::

    python scripts/images.py python --engine unix:///tmp/djm/e1/docker.sock [--tag TAG]
    python scripts/images.py rootfs          # only build (or find) the cached tarball

From Python: ``ensure_python_rootfs()`` and ``load_python_image(url, tag)``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("DJM_CACHE", "/var/cache/djm"))
#: The cached root file system (a tar of it, as ``docker import`` takes it).
PYTHON_ROOTFS = CACHE / "python3-bookworm-rootfs.tar"
#: The Debian release and the packages beyond ``minbase``.
SUITE = "bookworm"
PACKAGES = ("python3-minimal",)
#: The tag the tests use (their image prefix ``backend-test-`` and the environment ``python``).
PYTHON_TAG = "backend-test-python"
#: What the image runs when a task gives no command, and where.
IMAGE_CHANGES = ('CMD ["python3", "-"]', "WORKDIR /", "ENV LANG=C.UTF-8")


class ImageError(Exception):
    """The image could not be built or loaded; the text says why."""


def _mirror() -> str:
    """The Debian mirror apt uses on this machine (its deb822 or one-line sources)."""
    for source in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        try:
            for line in source.read_text().splitlines():
                words = line.split()
                if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                    return words[1]
                if words[:1] == ["deb"] and len(words) > 2 and "security" not in words[1]:
                    return words[1] if not words[1].startswith("[") else words[2]
        except OSError:
            continue
    return "http://deb.debian.org/debian"


def ensure_python_rootfs() -> Path:
    """The cached tarball of the Debian root file system with ``python3``; built when missing
    (needs root and ``debootstrap``; a few minutes)."""
    if PYTHON_ROOTFS.exists():
        return PYTHON_ROOTFS
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is missing: run `python scripts/engines.py ensure`")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="djm-rootfs-", dir=CACHE) as work:
        root = Path(work) / "root"
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                   SUITE, str(root), _mirror()]
        print(f"building the python image's root file system: {' '.join(command)}",
              file=sys.stderr)
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, check=False)
        if done.returncode != 0:
            raise ImageError(f"debootstrap failed ({done.returncode}):\n"
                             + done.stdout[-2000:])
        # what a container never needs: the package caches and lists, docs
        for folder in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                       "usr/share/man", "usr/share/locale", "usr/share/info"):
            shutil.rmtree(root / folder, ignore_errors=True)
        partial = PYTHON_ROOTFS.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."],
                       check=True)
        partial.replace(PYTHON_ROOTFS)  # whole or not at all
    return PYTHON_ROOTFS


def load_python_image(url: str, tag: str = PYTHON_TAG, timeout: float = 600) -> str:
    """Loads the python image into the engine at ``url`` as ``tag`` (unless it has it);
    returns ``tag``."""
    import docker  # only this function needs docker-py

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engines import api_version

    client = docker.APIClient(base_url=url, timeout=timeout, version=api_version(url))
    try:
        try:
            client.inspect_image(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        rootfs = ensure_python_rootfs()
        repository, _, version = tag.partition(":")
        with open(rootfs, "rb") as data:
            answer = client.import_image_from_data(data, repository=repository,
                                                   tag=version or "latest",
                                                   changes=list(IMAGE_CHANGES))
        try:
            client.inspect_image(tag)
        except docker.errors.ImageNotFound:
            raise ImageError(f"importing {tag} on {url} failed: {answer!r}"[:2000]) from None
        return tag
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("python", help="load the python image into engines")
    load.add_argument("--engine", action="append", required=True, help="engine URL")
    load.add_argument("--tag", default=PYTHON_TAG)
    sub.add_parser("rootfs", help="build (or find) the cached root file system")
    options = parser.parse_args(argv)
    try:
        if options.command == "rootfs":
            print(ensure_python_rootfs())
        else:
            for url in options.engine:
                print(f"{url}: {load_python_image(url, options.tag)}")
    except ImageError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
