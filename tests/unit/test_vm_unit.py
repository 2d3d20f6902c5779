"""The pure parts of the cgroup v2 VM's build (``scripts/engines.py``): the kernel found in a
bzImage, the initramfs' cpio archive and the order of its modules. No qemu, no Docker."""
import gzip
import lzma
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines import EngineError, _cpio, _module_order, extract_vmlinux

ELF = b"\x7fELF" + bytes(range(256)) * 40


@pytest.mark.parametrize("compress", [lzma.compress, gzip.compress], ids=["xz", "gzip"])
def test_the_kernel_is_found_after_a_false_magic(compress):
    # a setup code that happens to hold the magic bytes, then the real payload, then a trailer
    magic = compress(b"")[:6]
    bzimage = b"\x00" * 500 + magic + b"junk" + b"\x01" * 300 + compress(ELF) + b"\xff" * 64
    assert extract_vmlinux(bzimage) == ELF


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_bytes_without_a_kernel_are_one_error(data):
    with pytest.raises(EngineError):
        extract_vmlinux(data.replace(b"\x28\xb5\x2f\xfd", b""))


def _read_cpio(archive):
    """``{name: (mode, data)}`` of a newc archive (the kernel's reading of it)."""
    found, at = {}, 0
    while True:
        assert archive[at:at + 6] == b"070701"
        fields = [int(archive[at + 6 + 8 * i:at + 14 + 8 * i], 16) for i in range(13)]
        size, name_size = fields[6], fields[11]
        name = archive[at + 110:at + 110 + name_size - 1].decode()
        at += 110 + name_size
        at += -at % 4
        if name == "TRAILER!!!":
            return found, at
        found[name] = (fields[1], archive[at:at + size], (fields[9], fields[10]))
        at += size
        at += -at % 4


def test_the_cpio_archive_reads_back():
    archive = _cpio([("bin", stat.S_IFDIR | 0o755, b""),
                     ("dev/console", stat.S_IFCHR | 0o600, bytes([5, 1])),
                     ("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n"),
                     ("odd", stat.S_IFREG | 0o644, b"x" * 5)])
    found, end = _read_cpio(archive)
    assert end == len(archive) and len(archive) % 4 == 0
    assert found["init"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n", (0, 0))
    assert found["odd"][1] == b"xxxxx"
    assert found["dev/console"] == (stat.S_IFCHR | 0o600, b"", (5, 1))
    assert found["bin"][0] == stat.S_IFDIR | 0o755


def test_modules_come_after_their_dependencies(tmp_path):
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko\n"
        "kernel/fs/jbd2/jbd2.ko: kernel/lib/crc16.ko\n"
        "kernel/lib/crc16.ko:\n"
        "kernel/drivers/virtio/virtio-pci.ko: kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio.ko:\n")
    order = [p.name for p in _module_order(tmp_path, ("virtio_pci", "ext4"))]
    assert order == ["virtio.ko", "virtio-pci.ko", "crc16.ko", "jbd2.ko", "ext4.ko"]
    with pytest.raises(EngineError, match="no module nosuch"):
        _module_order(tmp_path, ("nosuch",))


def test_the_data_root_is_xfs_with_project_quota_and_the_cache_names_its_recipe():
    """The VM's engine offers a storage quota (docs/security.rst): its init mounts the third
    disk, made by mkfs.xfs on the host, with pquota on dockerd's data root; a cache of
    another recipe is another folder."""
    import engines
    assert f"mount -t xfs -o pquota /dev/vdc {engines.VM_DATA_ROOT}" in engines._VM_INIT
    assert "modprobe xfs" in engines._VM_INIT and "xfsprogs" in engines.VM_HOST_PACKAGES
    assert engines.VM_DIR.name.endswith(f"-r{engines.VM_RECIPE}")
    assert engines._size_bytes("4G") == 4 << 30 and engines._size_bytes("512") == 512
