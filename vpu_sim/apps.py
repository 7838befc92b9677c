"""Client programs: a player (decode), an encoder and a transcoder, as real V4L2 applications.

They open the video nodes, negotiate formats, stream buffers and read V4L2_CID_MEMORY_USAGE,
printing progress. A player may export its decoded frames as dma-bufs attached to a display
(``--export-to``), as a compositor pipeline does, through the memtrackfs socket.
"""
from __future__ import annotations

import errno
import sys
import threading
import time
from typing import Callable, Optional, TextIO

from memtrackfs.client import MemtrackClient
from vpu_sim import uapi
from vpu_sim.v4l2 import CAPTURE, OUTPUT, V4l2Device, find_node, fourcc

DECODER_CARD = "amphion vpu decoder"
ENCODER_CARD = "amphion vpu encoder"
DMA_CONTIG_EXPORTER = "videobuf2_dma_contig"


class Progress:
    """One status line: rewritten in place on a terminal, a line a second otherwise."""

    def __init__(self, label: str, out: TextIO = sys.stdout) -> None:
        self.label = label
        self.out = out
        self.tty = out.isatty()
        self._last = 0.0
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def update(self, frames: int, usage: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.1 if self.tty else 1.0):
            return
        self._last = now
        fps = frames / max(now - self._started, 1e-9)
        line = f"{self.label}: {frames} frames, {fps:.1f} fps, memory usage {usage} bytes"
        with self._lock:
            if self.tty:
                self.out.write("\r" + line + ("\n" if final else ""))
            else:
                self.out.write(line + "\n")
            self.out.flush()


class DisplayExport:
    """Decoded frames handed to a display as dma-bufs (exporter videobuf2_dma_contig)."""

    def __init__(self, socket_path: str, device: str) -> None:
        self.client = MemtrackClient(socket_path, client="")
        self.device = device
        self.buffers: list[int] = []

    def export(self, nbytes: int) -> None:
        buffer = self.client.call("export", exporter=DMA_CONTIG_EXPORTER, bytes=nbytes)["buffer"]
        attachment = self.client.call("attach", buffer=buffer, device=self.device)["attachment"]
        self.client.call("map", attachment=attachment)
        self.buffers.append(buffer)

    def close(self) -> None:
        """Release the exported buffers: closing the connection closes their fds."""
        self.client.close()


def _frame_bytes(fmt: uapi.v4l2_format) -> list[int]:
    pix = fmt.fmt.pix_mp
    return [pix.plane_fmt[i].sizeimage for i in range(pix.num_planes)]


def _drain(dev: V4l2Device, decoder: bool) -> None:
    """STOP, then dequeue CAPTURE until the LAST buffer (or EPIPE: already drained)."""
    dev.stop(decoder)
    while True:
        try:
            if dev.dequeue(CAPTURE).last:
                return
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                return
            raise


def _teardown(dev: V4l2Device) -> None:
    for buf_type in (OUTPUT, CAPTURE):
        dev.stream_off(buf_type)
        dev.request_buffers(buf_type, 0)


def _run_loop(dev: V4l2Device, seconds: float, output_bytes: list[int], progress: Progress,
              stop: Optional[threading.Event]) -> int:
    frames = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        done = dev.dequeue(OUTPUT)
        dev.queue(OUTPUT, done.index, output_bytes)
        decoded = dev.dequeue(CAPTURE)
        dev.queue(CAPTURE, decoded.index)
        frames += 1
        progress.update(frames, dev.get_control64(uapi.V4L2_CID_MEMORY_USAGE))
    progress.update(frames, dev.get_control64(uapi.V4L2_CID_MEMORY_USAGE), final=True)
    return frames


def play(dev_dir: str, codec: str, width: int, height: int, seconds: float,
         export: Optional[DisplayExport] = None, progress: Optional[Progress] = None,
         stop: Optional[threading.Event] = None) -> int:
    """Decode for ``seconds``; return the frames decoded."""
    progress = progress or Progress(f"play {width}x{height} {codec}")
    with V4l2Device(find_node(dev_dir, DECODER_CARD)) as dev:
        dev.set_format(OUTPUT, fourcc(codec), width, height)
        outputs = dev.request_buffers(OUTPUT, 8)
        # A compressed frame: a fraction of its buffer, as a real bitstream's would be.
        frame = [max(1, _frame_bytes(dev.get_format(OUTPUT))[0] // 8)]
        dev.stream_on(OUTPUT)
        for index in range(outputs):
            dev.queue(OUTPUT, index, frame)
        # The first buffer carried the sequence header: the decoder now knows the stream.
        capture_format = dev.get_format(CAPTURE)
        captures = dev.request_buffers(CAPTURE, dev.get_control(uapi.V4L2_CID_MIN_BUFFERS_FOR_CAPTURE) + 2)
        for index in range(captures):
            dev.queue(CAPTURE, index)
            if export is not None:
                export.export(sum(_frame_bytes(capture_format)))
        dev.stream_on(CAPTURE)
        frames = _run_loop(dev, seconds, frame, progress, stop)
        _drain(dev, decoder=True)
        _teardown(dev)
    return frames


def encode(dev_dir: str, width: int, height: int, seconds: float, progress: Optional[Progress] = None,
           stop: Optional[threading.Event] = None) -> int:
    """Encode raw NV12 frames to H.264 for ``seconds``; return the frames encoded."""
    progress = progress or Progress(f"encode {width}x{height} h264")
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
        frames = _run_loop(dev, seconds, raw, progress, stop)
        _drain(dev, decoder=False)
        _teardown(dev)
    return frames


def transcode(dev_dir: str, codec: str, width: int, height: int, seconds: float) -> tuple[int, int]:
    """A decode and an encode of the same size at once (two instances, like a transcoding pipeline)."""
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(name: str, job: Callable[[], int]) -> None:
        try:
            results[name] = job()
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)

    jobs = [threading.Thread(target=run, args=("decode", lambda: play(dev_dir, codec, width, height, seconds))),
            threading.Thread(target=run, args=("encode", lambda: encode(dev_dir, width, height, seconds)))]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    if errors:
        raise errors[0]
    return results["decode"], results["encode"]

