"""dma-bufs and heaps through a real mount: the Rockchip guide's shell flows, the views' bytes,
CMA exhaustion and recovery, a SIGKILLed client, bad requests and the --heap option."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from memtrackfs.client import MemtrackClient, MemtrackError
from memtrackfs.testing.helpers import Mount, memtrackfs, wait_for

KiB, MiB = 1 << 10, 1 << 20
RK = "proc/rk_dmabuf"
BUFINFO = "sys/kernel/debug/dma_buf/bufinfo"
BUFFERS = "sys/kernel/dmabuf/buffers"
BITMAP = "proc/rk_dma_heap/alloc_bitmap"


def sh(command: str) -> subprocess.CompletedProcess:
    """A shell command as the Rockchip guide runs them."""
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)


def cat(mount: Mount, relative: str) -> str:
    done = sh(f"cat {mount / relative}")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def board(memtrackfs_factory) -> Mount:
    """A mount with 1 GiB of system heap and a 1 MiB CMA heap (256 pages: easy to fill)."""
    return memtrackfs_factory(heaps=["system=1G", "cma=1M"])


def test_rk_guide_size_before_and_after_a_workload_finds_the_leak(board: Mount) -> None:
    before = cat(board, f"{RK}/size")
    assert before == "Total: 0 KiB\n"
    with board.client(client="player") as player:  # plays and cleans up after itself
        bufs = [player.call("heap_alloc", heap="system", bytes=3110400)["buffer"] for _ in range(4)]  # 1080p NV12
        assert cat(board, f"{RK}/size") == f"Total: {4 * 3112960 // KiB} KiB\n"  # page-aligned
        for buf in bufs:
            attachment = player.call("attach", buffer=buf, device="display-subsystem")["attachment"]
            player.call("map", attachment=attachment)
            player.call("unmap", attachment=attachment)
            player.call("detach", attachment=attachment)
            assert player.call("put", buffer=buf)["released"] is True
        assert cat(board, f"{RK}/size") == before
    with board.client(client="mediaserver") as service:  # a long-lived service that leaks one
        bufs = [service.call("heap_alloc", heap="system", bytes=MiB)["buffer"] for _ in range(3)]
        for buf in bufs[1:]:
            service.call("put", buffer=buf)
        assert cat(board, f"{RK}/size") == "Total: 1024 KiB\n"  # before + the leak
        assert f"{bufs[0]:08d}" in cat(board, BUFINFO)  # bufinfo names the leaked buffer
    wait_for(lambda: cat(board, f"{RK}/size") == before)  # the service exited: its fds closed


def test_rk_guide_peak_reset_and_einval(board: Mount) -> None:
    peak = board / f"{RK}/peak"
    with board.client() as app:
        big = app.call("heap_alloc", heap="system", bytes=3 * MiB)["buffer"]
        app.call("heap_alloc", heap="system", bytes=2 * MiB)
        assert cat(board, f"{RK}/peak") == "Peak: 5 MiB\n"
        app.call("put", buffer=big)
        assert (cat(board, f"{RK}/size"), cat(board, f"{RK}/peak")) == ("Total: 2048 KiB\n", "Peak: 5 MiB\n")
        done = sh(f"echo 1 > {peak}")
        assert done.returncode != 0 and "Invalid argument" in done.stderr
        assert cat(board, f"{RK}/peak") == "Peak: 5 MiB\n"  # unchanged
        assert sh(f"echo 0 > {peak}").returncode == 0
        assert cat(board, f"{RK}/peak") == "Peak: 0 MiB\n"  # 0, not the 2 MiB still in use
        app.call("heap_alloc", heap="system", bytes=MiB)
        assert cat(board, f"{RK}/peak") == "Peak: 3 MiB\n"  # the next export: the total
        for bad in ("' 0'", "''", "-1"):
            done = sh(f"echo {bad} > {peak}")
            assert "Invalid argument" in done.stderr, bad
        assert sh(f"echo 00 > {peak}").returncode == 0 and cat(board, f"{RK}/peak") == "Peak: 0 MiB\n"
        for path in ("size", "dev", "sgt"):
            done = sh(f"echo 0 > {board / RK / path}")
            assert done.returncode != 0 and "Input/output error" in done.stderr, path


def test_views_through_the_mount(board: Mount) -> None:
    with board.client() as app:
        vpu = app.call("heap_alloc", heap="system", bytes=MiB + 64 * KiB + 4096, tgid=416,
                       comm="allocator@4.0-service")
        assert (vpu["buffer"], vpu["size"], vpu["name"]) == (41, 1118208, "416-allocator@4.0-s")
        vb2 = app.call("export", exporter="videobuf2_dma_contig", bytes=155520, name=None)["buffer"]  # CMA
        app.call("attach", buffer=41, device="2c000000.vpu")
        displayed = [app.call("attach", buffer=buf, device="display-subsystem")["attachment"] for buf in (41, vb2)]
        app.call("map", attachment=displayed[0])
        assert app.call("map", attachment=displayed[1])["segments"] == [{"address": 0x1000_0000, "length": 155648}]
        assert cat(board, f"{RK}/dev") == (
            "          DMABUF NAME             EXPORT                 SIZE:KiB AttachedDevices\n\n"
            "ffffff8133ee1400 (null)           videobuf2_dma_co        152 KiB display-subsystem\n"
            "ffffff82c4fab200 416-allocator@4. system                 1092 KiB display-subsystem 2c000000.vpu\n")
        # Both are mapped, but neither the system heap nor vb2 keeps attach->sgt: nothing to list.
        assert cat(board, f"{RK}/sgt") == "          DMABUF NAME             EXPORT                 SIZE:KiB   SGLIST\n\n"
        prime = app.call("export", exporter="drm", bytes=8192, name="gem", cache_sgt_mapping=True)["buffer"]
        scanout = app.call("attach", buffer=prime, device="fdd90000.vop")["attachment"]
        app.call("map", attachment=scanout)
        assert cat(board, f"{RK}/sgt").endswith(
            " gem              drm                       8 KiB   0: 0x0000000010026000..0x0000000010027fff (         8 KiB)\n")
        # A device behind an IOMMU sees it where its driver maps it: the segments given (the newest
        # attachment's scatter list is the one shown).
        iommu = app.call("attach", buffer=prime, device="fdc38100.rkvdec-core")["attachment"]
        for bad in ([[0xFFFF0000, 4096]], [[0xFFFF0000, 0], [0, 8192]], [[0xFFFF0000]], [[2**64 - 4096, 8192]], []):
            with pytest.raises(MemtrackError) as info:
                app.call("map", attachment=iommu, segments=bad)
            assert info.value.errno_name == "EINVAL", bad
        app.call("map", attachment=iommu, segments=[[0xFFFF0000, 4096], [0xFFFE0000, 4096]])
        assert cat(board, f"{RK}/sgt").endswith(
            " gem              drm                       8 KiB   0: 0x00000000ffff0000..0x00000000ffff0fff (         4 KiB)\n"
            + " " * 65 + "   1: 0x00000000fffe0000..0x00000000fffe0fff (         4 KiB)\n")
        app.call("detach", attachment=iommu)
        app.call("put", buffer=prime)
        assert app.call("detach", attachment=scanout)["released"] is True
        assert cat(board, BUFINFO) == (
            "\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n"
            "00155648\t00000002\t00080007\t00000002\tvideobuf2_dma_contig\t00000042\t<none>\n"
            "\tAttached Devices:\n\tdisplay-subsystem\nTotal 1 devices attached\n\n"
            "01118208\t00000002\t00080007\t00000003\tsystem\t00000041\t416-allocator@4.0-s\n"
            "\tAttached Devices:\n\tdisplay-subsystem\n\t2c000000.vpu\nTotal 2 devices attached\n\n"
            "\nTotal 2 objects, 1273856 bytes\n")
        assert sorted(os.listdir(board / BUFFERS)) == ["41", "42"]
        assert cat(board, f"{BUFFERS}/42/exporter_name") == "videobuf2_dma_contig\n"
        assert cat(board, f"{BUFFERS}/41/size") == "1118208\n"
        assert cat(board, BITMAP) == "Total: 1024 KiB\n Used: 152 KiB\n\n" + " ".join(
            ["FFFFFFFF", "0000003F"] + ["00000000"] * 6) + "\n"
        modes = {f"{RK}/peak": 0o644, f"{RK}/size": 0o444, f"{RK}/dev": 0o444, f"{RK}/sgt": 0o444,
                 BUFINFO: 0o444, f"{BUFFERS}/41/size": 0o444, f"{BUFFERS}/41": 0o755, BITMAP: 0o444}
        for path, mode in modes.items():
            assert stat.S_IMODE(os.stat(board / path).st_mode) == mode, path
        with open(board / f"{BUFFERS}/42/size", "rb") as held_open:
            app.call("detach", attachment=displayed[1])
            assert app.call("put", buffer=vb2)["released"] is True
            assert sorted(os.listdir(board / BUFFERS)) == ["41"]
            with pytest.raises(OSError) as info:
                held_open.read()  # sysfs: the released buffer's open file answers ENODEV
            assert info.value.errno == 19
        with pytest.raises(FileNotFoundError):  # open() looks it up anew (stat may see FUSE's cache)
            open(board / f"{BUFFERS}/42/size", "rb")


def test_cma_fills_fails_with_enomem_and_recovers_after_frees(board: Mount) -> None:
    with board.client() as app:
        bufs = [app.call("heap_alloc", heap="cma", bytes=128 * KiB)["buffer"] for _ in range(8)]  # all 256 pages
        with pytest.raises(MemtrackError) as info:
            app.call("heap_alloc", heap="cma", bytes=4096)
        assert info.value.errno_name == "ENOMEM"
        assert board.kmsg()[-1].endswith(";cma: cma_alloc: cma: alloc failed, req-size: 1 pages, ret: -12")
        assert cat(board, BITMAP).startswith("Total: 1024 KiB\n Used: 1024 KiB\n\nFFFFFFFF FFFFFFFF")
        for buf in bufs[::2]:  # 128 pages free, in four holes of 32
            app.call("put", buffer=buf)
        cma = app.call("heaps")["heaps"][1]
        assert cma == {"name": "cma", "kind": "cma", "capacity": MiB, "used": 512 * KiB, "free": 512 * KiB,
                       "rockchip": False, "bitmap": True,  # the one alloc_bitmap shows
                       "base": 0x1000_0000, "free_ranges": 4, "largest_free": 128 * KiB}
        assert cat(board, BITMAP) == ("Total: 1024 KiB\n Used: 512 KiB\n\n"
                                      + " ".join(["00000000", "FFFFFFFF"] * 4) + "\n")
        with pytest.raises(MemtrackError) as info:  # enough free pages, but not in one range
            app.call("heap_alloc", heap="cma", bytes=129 * KiB)
        assert info.value.errno_name == "ENOMEM" and "largest 32 pages" in str(info.value)
        app.call("put", buffer=bufs[1])  # joins the first two holes
        got = app.call("heap_alloc", heap="cma", bytes=192 * KiB)["buffer"]
        assert app.call("heaps")["heaps"][1]["free_ranges"] == 3
        assert cat(board, BITMAP).endswith("\nFFFFFFFF 0000FFFF 00000000 FFFFFFFF 00000000 FFFFFFFF 00000000 FFFFFFFF\n")
        assert got in [b["buffer"] for b in app.call("buffers")["buffers"]]


WORKLOAD = """
import sys, time
from memtrackfs.client import MemtrackClient
c = MemtrackClient(sys.argv[1], client="decoder")
a = c.call("heap_alloc", heap="system", bytes=8 << 20)["buffer"]
b = c.call("export", exporter="videobuf2_dma_contig", bytes=256 << 10)["buffer"]
c.call("get", buffer=a)
c.call("map", attachment=c.call("attach", buffer=b, device="2d080000.vpu-core")["attachment"])
print(a, b, flush=True)
time.sleep(60)
"""


def test_sigkilled_client_releases_its_buffers(board: Mount) -> None:
    with board.client() as other:
        kept = other.call("heap_alloc", heap="system", bytes=MiB)["buffer"]
        before = cat(board, f"{RK}/size")
        worker = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(board.socket)], stdout=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            a, b = map(int, worker.stdout.readline().split())
            comm = Path(f"/proc/{worker.pid}/comm").read_text().strip()
            assert cat(board, f"{RK}/size") == f"Total: {1024 + 8192 + 256} KiB\n"
            dev = cat(board, f"{RK}/dev")
            assert f"{worker.pid}-{comm}"[:16].ljust(16) + " videobuf2_dma_co" in dev
            other.call("get", buffer=b)  # another process shares one of them
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        finally:
            worker.kill()
            worker.stdout.close()
        board.settle()  # the killed worker's connection has ended: its references are gone
        assert cat(board, f"{RK}/size") == f"Total: {1024 + 256} KiB\n"
        assert cat(board, f"{RK}/peak") == "Peak: 9 MiB\n"  # peak stays
        assert [(x["buffer"], x["count"], x["attachments"]) for x in other.call("buffers")["buffers"]] == [
            (b, 1, []), (kept, 1, [])]
        assert [h["used"] for h in other.call("heaps")["heaps"]] == [MiB, 256 * KiB]
        other.call("put", buffer=b)
        assert cat(board, f"{RK}/size") == before
    wait_for(lambda: cat(board, f"{RK}/size") == "Total: 0 KiB\n")
    assert a == kept + 1  # the worker's buffers really were new ones


def test_bad_requests_get_clear_errors_and_change_nothing(board: Mount) -> None:
    with board.client() as app, board.client() as stranger:
        buf = app.call("heap_alloc", heap="cma", bytes=4096)["buffer"]
        attachment = app.call("attach", buffer=buf, device="display-subsystem")["attachment"]
        def state() -> tuple:
            replies = [{k: v for k, v in app.call(op).items() if k != "id"} for op in ("buffers", "heaps")]
            return (*replies, cat(board, BUFINFO), cat(board, f"{RK}/sgt"))

        before = state()
        cases = [
            ("heap_alloc", {"heap": "nope", "bytes": 4096}, "ENOENT", "no heap named 'nope'; heaps: system, cma"),
            ("heap_alloc", {"heap": "cma", "bytes": 0}, "EINVAL", "'bytes' must be an integer in 1..1099511627776"),
            ("heap_alloc", {"heap": "system", "bytes": 2**40 + 1}, "EINVAL", "must be an integer in 1.."),
            ("heap_alloc", {"heap": "system", "bytes": "4096"}, "EINVAL", "got '4096'"),
            ("heap_alloc", {"heap": "cma", "bytes": 2 * MiB}, "ENOMEM", "more than heap cma's whole capacity of 1 MiB"),
            ("heap_alloc", {"heap": "system", "bytes": 4096, "name": "x" * 33}, "EINVAL", "longer than 32"),
            ("heap_alloc", {"heap": "system", "bytes": 4096, "comm": "a\nb"}, "EINVAL", "control character"),
            ("export", {"exporter": "two words", "bytes": 4096}, "EINVAL", "or a space"),
            ("export", {"exporter": "vb2", "bytes": 4096, "heap": 7}, "EINVAL", "'heap' must be a string"),
            ("attach", {"buffer": 999, "device": "display-subsystem"}, "ENOENT", "no live dma-buf has inode 999"),
            ("attach", {"buffer": buf}, "EINVAL", "'device' is required"),
            ("get", {"buffer": -1}, "EINVAL", "'buffer' must be an integer"),
            ("put", {"buffer": buf + 1}, "ENOENT", "already released"),
            ("map", {"attachment": 99}, "ENOENT", "no attachment has id 99"),
            ("unmap", {"attachment": attachment}, "EINVAL", "is not mapped"),
        ]
        for op, fields, code, words in cases:
            with pytest.raises(MemtrackError) as info:
                app.call(op, **fields)
            assert info.value.errno_name == code and words in str(info.value), (op, fields, info.value)
        for op, fields, code, words in [("put", {"buffer": buf}, "EBADF", "holds no reference to dma-buf"),
                                        ("detach", {"attachment": attachment}, "EPERM", "another connection")]:
            with pytest.raises(MemtrackError) as info:
                stranger.call(op, **fields)
            assert info.value.errno_name == code and words in str(info.value)
        assert state() == before
        app.call("put", buffer=buf)
        with pytest.raises(MemtrackError) as info:  # the attachment still holds the buffer...
            app.call("put", buffer=buf)
        assert info.value.errno_name == "EBADF"  # ...but this connection's own reference is gone
        assert app.call("detach", attachment=attachment)["released"] is True
        assert app.call("buffers")["buffers"] == [] and cat(board, f"{RK}/size") == "Total: 0 KiB\n"


def test_heap_option(tmp_path: Path) -> None:
    done = memtrackfs("mount", str(tmp_path / "mnt"), "--socket", str(tmp_path / "s.sock"), "--heap", "cma",
                      check=False)
    assert done.returncode == 1 and b"CMA heap 'cma' needs a size, e.g. cma=256M" in done.stderr
    assert not (tmp_path / "s.sock").exists()
    mount = Mount(tmp_path / "mnt", tmp_path / "driver.sock")
    memtrackfs("mount", str(mount.path), "--socket", str(mount.socket), "--heap", "system-uncached=64M")
    try:
        with MemtrackClient(str(mount.socket)) as app:
            assert [(h["name"], h["kind"], h["capacity"]) for h in app.call("heaps")["heaps"]] == [
                ("system-uncached", "system", 64 * MiB)]
            exported = app.call("export", exporter="videobuf2_dma_sg", bytes=MiB + 4096)["buffer"]
            assert len(app.call("map", attachment=app.call("attach", buffer=exported, device="x")["attachment"])
                       ["segments"]) == 2  # no CMA heap: from the system heap, scattered
        assert os.listdir(mount / "proc/rk_dma_heap") == []  # no CMA heap, no bitmap
    finally:
        mount.umount()
