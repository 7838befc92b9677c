"""A decoder and an encoder session as Rockchip's MPP runs them on RK3588: the buffers MPP and
its vdpu34x / vepu580 HALs allocate (sizes: ``vpu_sim.apps.mpp.sizes``), from the dma-heaps MPP
picks, and per frame the registers naming them, sent to dev/mpp_service and polled.

The buffers are the process's own dma-bufs, allocated through memtrackfs (``heap_alloc``, as
DMA_HEAP_IOCTL_ALLOC), so they carry its ``<tgid>-<comm>`` name; the kernel imports them into
the session when their fds first appear in registers. The decoder allocates as MPP does, on
demand: a frame slot (frame buffer and its colmv) when no free one is left, a packet buffer for
each of the first three tasks.
"""
from __future__ import annotations

import ctypes
from collections import deque
from typing import Optional

from memtrackfs.client import MemtrackClient
from vpu_sim import mpp_uapi as abi
from vpu_sim.apps.mpp import sizes
from vpu_sim.apps.mpp.service import MppServiceDevice, probe
from vpu_sim.apps.mpp.sizes import HEAP_CACHED, HEAP_UNCACHED, Stream

_DEC_WRITES = ((8, 56), (64, 64), (128, 15), (160, 40))  # control, codec parameters, common and codec addresses
_DEC_READS = ((224, 14),)                                 # status
_ENC_WRITES = ((0, 22), (160, 40))                        # base class, picture class (addresses, format)
_ENC_READS = ((0x4000 // 4, 16),)                         # status class


class DmaBufs:
    """The dma-bufs this process allocated (as its fds): references held on its memtrackfs
    connection, which closing drops, as a process's fds close when it exits."""

    def __init__(self, client: MemtrackClient) -> None:
        self.client = client
        self.sizes: dict[int, int] = {}

    def alloc(self, heap: str, nbytes: int) -> int:
        reply = self.client.call("heap_alloc", heap=heap, bytes=nbytes)
        self.sizes[reply["buffer"]] = reply["size"]
        return reply["buffer"]

    def free(self, buffer: int) -> None:
        self.client.call("put", buffer=buffer)
        del self.sizes[buffer]

    @property
    def total(self) -> int:
        """The bytes of the buffers it holds: what ``mpp_buffer_total_now()`` would report."""
        return sum(self.sizes.values())


class Display:
    """Frames shown on a display controller, as a DRM/KMS sink shows them: each imported
    (attached and mapped for the display), the last ``sizes.DISPLAY_QUEUE`` kept on it."""

    def __init__(self, bufs: DmaBufs, device: str) -> None:
        self.bufs = bufs
        self.device = device
        self.shown: deque[tuple[int, int]] = deque()   # (buffer, attachment), oldest first

    def show(self, buffer: int) -> None:
        attachment = self.bufs.client.call("attach", buffer=buffer, device=self.device)["attachment"]
        self.bufs.client.call("map", attachment=attachment)
        self.shown.append((buffer, attachment))
        if len(self.shown) > sizes.DISPLAY_QUEUE:
            self._drop(*self.shown.popleft())

    def _drop(self, buffer: int, attachment: int) -> None:
        self.bufs.client.call("detach", attachment=attachment)

    def buffers(self) -> list[int]:
        return [buffer for buffer, _ in self.shown]

    def close(self) -> None:
        while self.shown:
            self._drop(*self.shown.popleft())


class MppDecoder:
    def __init__(self, dev_path: str, bufs: DmaBufs, stream: Stream, display: Optional[Display] = None) -> None:
        probe(dev_path, abi.DEVICE_RKVDEC)
        self.dev = MppServiceDevice(dev_path)
        self.dev.init_client(abi.DEVICE_RKVDEC)
        self.bufs = bufs
        self.stream = stream
        self.display = display
        self.frame_bytes = sizes.frame_size(stream)
        self.colmv_bytes = sizes.colmv_size(stream)
        self.tables = [bufs.alloc(HEAP_UNCACHED, n) for n in sizes.table_sizes(stream)]
        self.rcb = [bufs.alloc(HEAP_UNCACHED, sizes.rcb_size(stream)) for _ in range(sizes.HAL_TASKS)]
        self.packets: list[int] = []
        self.slots: list[tuple[int, int]] = []    # (frame, colmv) per frame slot
        self.refs: deque[int] = deque(maxlen=sizes.dpb_frames(stream))          # slots, newest last
        self.regs = (ctypes.c_uint32 * abi.DEC_REG_NUM)()
        self.frames = 0

    def _next_slot(self) -> int:
        """A frame stays busy (a reference, reordered for display, on the display) until
        ``sizes.frame_count()`` later frames: the decoder cycles through that many slots,
        allocating each the first time it is needed."""
        slot = self.frames % sizes.frame_count(self.stream)
        if slot == len(self.slots):
            self.slots.append((self.bufs.alloc(HEAP_CACHED, self.frame_bytes),
                               self.bufs.alloc(HEAP_UNCACHED, self.colmv_bytes)))
        return slot

    def _packet(self) -> int:
        if len(self.packets) < sizes.PACKET_SLOTS:
            self.packets.append(self.bufs.alloc(HEAP_CACHED, sizes.packet_size(self.stream)))
        return self.packets[self.frames % sizes.PACKET_SLOTS]

    def decode(self) -> int:
        """One frame: the slot it went to; it is shown, if there is a display."""
        slot = self._next_slot()
        task = self.frames % sizes.HAL_TASKS
        offsets = self._registers(slot, self._packet(), task)
        rcb = [(reg, size) for reg, _, size in sizes.rcb_segments(self.stream)]
        self.dev.send_task(self.regs, _DEC_WRITES, _DEC_READS, offsets, rcb)
        self.dev.poll()
        self.frames += 1
        self.refs.append(slot)
        if self.display is not None:
            self.display.show(self.slots[slot][0])
        return slot

    def _registers(self, slot: int, packet: int, task: int) -> list[tuple[int, int]]:
        """The vdpu34x register file of one task (vdpu34x_com.h, vdpu34x_h265d.h, vdpu34x_vp9d.h);
        returns the (register, offset) pairs of buffers named at an offset."""
        regs, codec = self.regs, self.stream.codec
        ctypes.memset(regs, 0, ctypes.sizeof(regs))
        frame, colmv = self.slots[slot]
        refs = [self.slots[s] for s in reversed(self.refs)]
        regs[abi.DEC_REG_FORMAT] = abi.DEC_FORMAT[codec]
        regs[abi.DEC_REG_STREAM] = regs[abi.DEC_REG_RLCWRITE] = packet
        regs[abi.DEC_REG_DECOUT], regs[abi.DEC_REG_COLMV_CUR] = frame, colmv
        regs[abi.DEC_REG_ERROR_REF] = refs[0][0] if refs else frame
        rcb = self.rcb[task]
        offsets = [(reg, offset) for reg, offset, _ in sizes.rcb_segments(self.stream) if offset]
        for reg in abi.DEC_REG_RCB:
            regs[reg] = rcb
        if codec == "vp9":
            probs, default, probes, segid = self.tables[:4], self.tables[4], self.tables[5:8], self.tables[8]
            regs[abi.VP9_REG_PROB_DEFAULT] = default
            regs[abi.VP9_REG_PROB_LAST] = regs[abi.VP9_REG_PROB_UPDATE] = probs[self.frames % len(probs)]
            regs[abi.VP9_REG_COUNT] = probes[task]
            regs[abi.VP9_REG_SEGID[0]] = regs[abi.VP9_REG_SEGID[1]] = segid
            offsets.append((abi.VP9_REG_SEGID[self.frames % 2], sizes.table_sizes(self.stream)[-1] // 2))
            for reg, (ref, _) in zip(abi.VP9_REG_REFS, refs):
                regs[reg] = ref
            if refs:
                regs[abi.VP9_REG_COLMV_REF] = refs[0][1]
        else:
            (tables,) = self.tables
            cabac, info = (28672, 122880) if codec == "hevc" else (4096, 24576)
            for reg in abi.DEC_REG_TABLES:
                regs[reg] = tables
            offsets += [(abi.DEC_REG_TABLES[0], cabac + task * info), (abi.DEC_REG_TABLES[1], cabac + task * info + 8192)]
            for i, (ref, ref_colmv) in enumerate(refs):
                regs[abi.DEC_REG_REFS[i]], regs[abi.DEC_REG_COLMV_REFS[i]] = ref, ref_colmv
        return offsets

    def close(self) -> None:
        if self.display is not None:
            self.display.close()
        self.dev.close()


ENC_PROFILE_NAME = {"h264": "high", "hevc": "main"}      # strof_profle()
ENC_CODING_NAME = {"h264": "h264", "hevc": "h265"}       # strof_coding_type()


class MppEncoder:
    """An encoder session: the application's input frame, MPP's packet buffer, the HAL's
    reconstruction sets (pixels, thumbnail, and for H.265 motion vectors): the current and the
    reference one in turn."""

    def __init__(self, dev_path: str, bufs: DmaBufs, codec: str, width: int, height: int, fps: int) -> None:
        probe(dev_path, abi.DEVICE_RKVENC)
        self.dev = MppServiceDevice(dev_path)
        self.dev.init_client(abi.DEVICE_RKVENC)
        self.bufs = bufs
        self.codec, self.width, self.height, self.fps = codec, width, height, fps
        self.sizes = sizes.encoder_buffers(codec, width, height)
        self.source = bufs.alloc(HEAP_CACHED, self.sizes.source)
        self.packet = bufs.alloc(HEAP_CACHED, self.sizes.packet)
        self.recon: list[tuple[int, ...]] = []
        self.regs = (ctypes.c_uint32 * (abi.ENC_REG_BYTES // 4))()
        self.frames = 0
        bitrate = width * height // 8 * fps   # mpi_enc_test's default target
        self.dev.codec_info([
            (abi.ENC_INFO_WIDTH, abi.CODEC_INFO_FLAG_NUMBER, width),
            (abi.ENC_INFO_HEIGHT, abi.CODEC_INFO_FLAG_NUMBER, height),
            (abi.ENC_INFO_FORMAT, abi.CODEC_INFO_FLAG_STRING, abi.info_string(ENC_CODING_NAME[codec])),
            (abi.ENC_INFO_FPS_IN, abi.CODEC_INFO_FLAG_NUMBER, fps),
            (abi.ENC_INFO_FPS_OUT, abi.CODEC_INFO_FLAG_NUMBER, fps),
            (abi.ENC_INFO_RC_MODE, abi.CODEC_INFO_FLAG_STRING, abi.info_string("vbr")),
            (abi.ENC_INFO_BITRATE, abi.CODEC_INFO_FLAG_NUMBER, bitrate),
            (abi.ENC_INFO_GOP_SIZE, abi.CODEC_INFO_FLAG_NUMBER, 2 * fps),
            (abi.ENC_INFO_PROFILE, abi.CODEC_INFO_FLAG_STRING, abi.info_string(ENC_PROFILE_NAME[codec])),
        ])

    def _recon(self, index: int) -> tuple[int, ...]:
        while len(self.recon) <= index:
            parts = [self.sizes.recon, self.sizes.thumb] + ([self.sizes.cmv] if self.sizes.cmv else [])
            self.recon.append(tuple(self.bufs.alloc(HEAP_UNCACHED, n) for n in parts))
        return self.recon[index]

    def encode(self) -> None:
        regs = self.regs
        ctypes.memset(regs, 0, ctypes.sizeof(regs))
        current = self._recon(self.frames % 2)
        regs[abi.ENC_REG_FORMAT] = abi.ENC_FORMAT[self.codec]
        for reg in abi.ENC_REG_SRC:
            regs[reg] = self.source
        for reg in abi.ENC_REG_BITSTREAM:
            regs[reg] = self.packet
        regs[abi.ENC_REG_RECON_WRITE[0]] = regs[abi.ENC_REG_RECON_WRITE[1]] = current[0]
        regs[abi.ENC_REG_THUMB_WRITE] = current[1]
        if self.sizes.cmv:
            regs[abi.ENC_REG_CMV_WRITE] = current[2]
        if self.frames:
            reference = self._recon((self.frames - 1) % 2)
            regs[abi.ENC_REG_REF_READ[0]] = regs[abi.ENC_REG_REF_READ[1]] = reference[0]
            regs[abi.ENC_REG_THUMB_READ] = reference[1]
            if self.sizes.cmv:
                regs[abi.ENC_REG_CMV_READ] = reference[2]
        luma = sizes.align(self.width, 16) * sizes.align(self.height, 16)
        offsets = [(abi.ENC_REG_SRC[1], luma), (abi.ENC_REG_RECON_WRITE[1], self.sizes.header)]
        self.dev.send_task(regs, _ENC_WRITES, _ENC_READS, offsets)
        self.dev.poll()
        self.frames += 1

    def close(self) -> None:
        self.dev.close()
