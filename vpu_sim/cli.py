"""The ``vpu-sim`` command: the simulated Amphion VPU daemon and its client programs.

Every command takes ``--mount MNT`` (a memtrackfs mount); without it the real paths are used
(/dev/video*, and the socket from $MEMTRACKFS_SOCKET or the mount table), which is what a user
gets inside ``memtrackfs run``.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Optional

from memtrackfs.mounts import socket_for_mount
from vpu_sim import amphion
from vpu_sim.apps import DisplayExport, encode, play, transcode
from vpu_sim.daemon import ALLOCATORS, VpuDaemon


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must look like 1920x1080, not {text!r}")
    return int(match.group(1)), int(match.group(2))


def socket_path(mount: str) -> str:
    return os.environ.get("MEMTRACKFS_SOCKET") or socket_for_mount(mount)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpu-sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--mount", default="/", help="memtrackfs mount point (default: the real paths)")
        return p

    daemon = command("daemon", "run the simulated VPU driver")
    daemon.add_argument("--board", choices=sorted(amphion.BOARDS), default="imx8qxp")
    daemon.add_argument("--fps", type=float, default=30.0, help="frames the firmware processes a second")
    daemon.add_argument("--allocator", choices=ALLOCATORS, default="dma-contig",
                        help="where vb2 planes come from: CMA (dma-contig), the system heap (dma-sg), or no DMA memory")
    for name, help_text in (("play", "decode a simulated stream"), ("encode", "encode simulated frames"),
                            ("transcode", "decode and encode at once")):
        app = command(name, help_text)
        app.add_argument("--size", type=_size, default=(1920, 1080))
        app.add_argument("--seconds", type=float, default=10.0)
        if name != "encode":
            app.add_argument("--codec", default="h264")
        if name == "play":
            app.add_argument("--export-to", metavar="DEVICE",
                             help="export decoded frames as dma-bufs attached to DEVICE (e.g. display-subsystem)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    dev_dir = os.path.join(args.mount, "dev")
    try:
        if args.command == "daemon":
            return VpuDaemon(socket_path(args.mount), args.board, args.fps, args.allocator).run()
        width, height = args.size
        if args.command == "play":
            export = DisplayExport(socket_path(args.mount), args.export_to) if args.export_to else None
            try:
                play(dev_dir, args.codec, width, height, args.seconds, export)
            finally:
                if export is not None:
                    export.close()
        elif args.command == "encode":
            encode(dev_dir, width, height, args.seconds)
        else:
            transcode(dev_dir, args.codec, width, height, args.seconds)
        return 0
    except OSError as exc:
        print(f"vpu-sim: {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
