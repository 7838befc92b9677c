"""Client programs: a player (decode), an encoder and a transcoder, as real V4L2 applications.

They open the video nodes, negotiate formats, stream buffers and read V4L2_CID_MEMORY_USAGE,
printing progress. A player follows dynamic resolution changes (the decoder ends its CAPTURE
stream with a LAST buffer; the player restarts CAPTURE at the new format) and may export its
decoded frames as dma-bufs attached to a display (``--export-to``), as a compositor pipeline
does, through the memtrackfs socket.
"""
from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
from typing import Callable, Optional, Sequence, TextIO

from memtrackfs.client import MemtrackClient
from vpu_sim import uapi
from vpu_sim.apps.hold import hand_over
from vpu_sim.apps.stall import CmaStallWatch
from vpu_sim.apps.v4l2 import CAPTURE, OUTPUT, Dequeued, V4l2Device, find_node, fourcc

DECODER_CARD = "amphion vpu decoder"
ENCODER_CARD = "amphion vpu encoder"
DMA_CONTIG_EXPORTER = "videobuf2_dma_contig"
HEADER_TIMEOUT = 10.0  # seconds for the decoder to report the stream (one frame period, normally)

# A transcoder's two streams report on the same stdout: one line at a time.
_OUTPUT_LOCK = threading.Lock()


class Progress:
    """An application's status: one line rewritten in place on a terminal, a line a second
    otherwise; with ``json_lines``, JSON objects four times a second (for ``vpu-sim scenario``).

    The JSON lines carry the peak of the memory-usage control too.
    """

    def __init__(self, label: str, out: TextIO = sys.stdout, json_lines: bool = False) -> None:
        self.label = label
        self.out = out
        self.json = json_lines
        self.tty = out.isatty() and not json_lines
        self.peak = 0
        self._last = 0.0
        self._started = time.monotonic()

    def _write(self, text: str) -> None:
        with _OUTPUT_LOCK:
            self.out.write(text)
            self.out.flush()

    def update(self, frames: int, usage: int, final: bool = False) -> None:
        self.peak = max(self.peak, usage)
        now = time.monotonic()
        if not final and now - self._last < (0.1 if self.tty else 0.25 if self.json else 1.0):
            return
        self._last = now
        fps = frames / max(now - self._started, 1e-9)
        if self.json:
            self._write(json.dumps({"label": self.label, "frames": frames, "fps": round(fps, 1), "usage": usage,
                                    "peak": self.peak, "final": final}) + "\n")
            return
        line = f"{self.label}: {frames} frames, {fps:.1f} fps, memory usage {usage} bytes"
        self._write("\r" + line + ("\n" if final else "") if self.tty else line + "\n")

    def note(self, event: str, text: str, **fields: object) -> None:
        """Something that happened besides frames: a resolution change, buffers handed over."""
        if self.json:
            self._write(json.dumps({"label": self.label, "event": event, "text": text, **fields}) + "\n")
        else:
            self._write(("\r\x1b[K" if self.tty else "") + f"{self.label}: {text}\n")


class DisplayExport:
    """Decoded frames handed to a display as dma-bufs (exporter videobuf2_dma_contig)."""

    def __init__(self, socket_path: str, device: str) -> None:
        self.socket_path = socket_path
        self.client = MemtrackClient(socket_path, client="")
        self.device = device
        self.exported: list[tuple[int, int]] = []  # (buffer, attachment), one per CAPTURE buffer

    def replace(self, sizes: Sequence[int]) -> None:
        """Export one buffer per size, attached and mapped, after releasing those exported before
        (a new CAPTURE set after a resolution change)."""
        for buffer, attachment in self.exported:
            self.client.call("unmap", attachment=attachment)
            self.client.call("detach", attachment=attachment)
            self.client.call("put", buffer=buffer)
        self.exported = []
        for nbytes in sizes:
            buffer = self.client.call("export", exporter=DMA_CONTIG_EXPORTER, bytes=nbytes)["buffer"]
            attachment = self.client.call("attach", buffer=buffer, device=self.device)["attachment"]
            self.client.call("map", attachment=attachment)
            self.exported.append((buffer, attachment))

    def hand_over(self, seconds: float) -> int:
        """The keep-dmabufs bug: a helper keeps the exported buffers ``seconds`` (see ``hold``)."""
        return hand_over(self.socket_path, [buffer for buffer, _ in self.exported], seconds)

    def close(self) -> None:
        """Release what this process still holds: closing the connection closes its fds."""
        self.client.close()


def _frame_bytes(fmt: uapi.v4l2_format) -> list[int]:
    pix = fmt.fmt.pix_mp
    return [pix.plane_fmt[i].sizeimage for i in range(pix.num_planes)]


Dequeue = Callable[[int], Dequeued]


def _drain(dev: V4l2Device, decoder: bool, dequeue: Optional[Dequeue] = None) -> None:
    """STOP, then dequeue CAPTURE until the LAST buffer (or EPIPE: already drained), queueing the
    others back: the drain still needs CAPTURE buffers for the frames queued before the STOP
    (the stateful codec interface's Drain section: both queues are handled as usual)."""
    dequeue = dequeue or dev.dequeue
    dev.stop(decoder)
    while True:
        try:
            decoded = dequeue(CAPTURE)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                return
            raise
        if decoded.last:
            return
        dev.queue(CAPTURE, decoded.index)


def _teardown(dev: V4l2Device) -> None:
    for buf_type in (OUTPUT, CAPTURE):
        dev.stream_off(buf_type)
        dev.request_buffers(buf_type, 0)


def _run_loop(dev: V4l2Device, seconds: float, output_bytes: list[int], progress: Progress,
              source_change: Optional[Callable[[], None]] = None, dequeue: Optional[Dequeue] = None) -> int:
    """Process frames for ``seconds``: CAPTURE first, since a decoder that meets a new resolution
    ends CAPTURE with a LAST buffer and completes no OUTPUT buffer until CAPTURE restarts."""
    dequeue = dequeue or dev.dequeue
    frames = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        decoded = dequeue(CAPTURE)
        if decoded.last and source_change is not None:
            source_change()
            continue
        dev.queue(CAPTURE, decoded.index)
        done = dev.dequeue(OUTPUT)
        dev.queue(OUTPUT, done.index, output_bytes)
        frames += 1
        progress.update(frames, dev.get_control64(uapi.V4L2_CID_MEMORY_USAGE))
    progress.update(frames, dev.get_control64(uapi.V4L2_CID_MEMORY_USAGE), final=True)
    return frames


def _start_capture(dev: V4l2Device, export: Optional[DisplayExport]) -> uapi.v4l2_format:
    """Allocate, queue (and export) CAPTURE buffers for the stream's format, then STREAMON."""
    capture_format = dev.get_format(CAPTURE)
    captures = dev.request_buffers(CAPTURE, dev.get_control(uapi.V4L2_CID_MIN_BUFFERS_FOR_CAPTURE) + 2)
    for index in range(captures):
        dev.queue(CAPTURE, index)
    if export is not None:
        export.replace([sum(_frame_bytes(capture_format))] * captures)
    dev.stream_on(CAPTURE)
    return capture_format


def play(dev_dir: str, codec: str, width: int, height: int, seconds: float, progress: Progress,
         export: Optional[DisplayExport] = None) -> int:
    """Decode for ``seconds``; return the frames decoded."""
    with V4l2Device(find_node(dev_dir, DECODER_CARD)) as dev, \
            CmaStallWatch(dev, os.path.join(dev_dir, "kmsg")) as watch:
        dev.set_format(OUTPUT, fourcc(codec), width, height)
        outputs = dev.request_buffers(OUTPUT, 8)
        # A compressed frame: a fraction of its buffer, as a real bitstream's would be.
        frame = [max(1, _frame_bytes(dev.get_format(OUTPUT))[0] // 8)]
        dev.subscribe_event(uapi.V4L2_EVENT_SOURCE_CHANGE)
        dev.stream_on(OUTPUT)
        for index in range(outputs):
            dev.queue(OUTPUT, index, frame)
        # The first buffer carries the sequence header; the decoder reports the stream it found with
        # V4L2_EVENT_SOURCE_CHANGE, and only then are the CAPTURE format and MIN_BUFFERS_FOR_CAPTURE
        # the stream's (the stateful decoder interface's Initialization).
        dev.wait_event(HEADER_TIMEOUT)
        _start_capture(dev, export)

        def source_change() -> None:
            dev.stream_off(CAPTURE)
            dev.request_buffers(CAPTURE, 0)
            pix = _start_capture(dev, export).fmt.pix_mp
            progress.note("resolution", f"resolution change to {pix.width}x{pix.height}",
                          width=pix.width, height=pix.height)

        frames = _run_loop(dev, seconds, frame, progress, source_change, watch.dequeue)
        _drain(dev, decoder=True, dequeue=watch.dequeue)
        _teardown(dev)
    return frames


def encode(dev_dir: str, width: int, height: int, seconds: float, progress: Progress) -> int:
    """Encode raw NV12 frames to H.264 for ``seconds``; return the frames encoded."""
    with V4l2Device(find_node(dev_dir, ENCODER_CARD)) as dev:
        raw = _frame_bytes(dev.set_format(OUTPUT, uapi.V4L2_PIX_FMT_NV12M, width, height))
        dev.set_format(CAPTURE, uapi.V4L2_PIX_FMT_H264, width, height)
        outputs = dev.request_buffers(OUTPUT, 6)
        captures = dev.request_buffers(CAPTURE, 6)
        for index in range(captures):
            dev.queue(CAPTURE, index)
        dev.stream_on(CAPTURE)
        for index in range(outputs):
            dev.queue(OUTPUT, index, raw)
        dev.stream_on(OUTPUT)
        frames = _run_loop(dev, seconds, raw, progress)
        _drain(dev, decoder=False)
        _teardown(dev)
    return frames


def transcode(dev_dir: str, codec: str, width: int, height: int, seconds: float,
              decode_progress: Progress, encode_progress: Progress) -> tuple[int, int]:
    """A decode and an encode of the same size at once (two instances, like a transcoding pipeline)."""
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(name: str, job: Callable[[], int]) -> None:
        try:
            results[name] = job()
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)

    jobs = [threading.Thread(target=run, args=("decode", lambda: play(dev_dir, codec, width, height, seconds,
                                                                       decode_progress))),
            threading.Thread(target=run, args=("encode", lambda: encode(dev_dir, width, height, seconds,
                                                                         encode_progress)))]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    if errors:
        raise errors[0]
    return results["decode"], results["encode"]
