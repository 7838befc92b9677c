"""The ``vpu-sim`` command: the simulated VPU drivers (NXP Amphion, Rockchip mpp_service), their
client programs and scenarios.

Every command takes ``--mount MNT`` (a memtrackfs mount); without it the real paths are used
(/dev/video*, /dev/mpp_service, and the socket from $MEMTRACKFS_SOCKET or the mount table),
which is what a user gets inside ``memtrackfs run``.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from typing import Callable, Optional, TypeVar

from memtrackfs.client import MemtrackClient
from vpu_sim import params
from vpu_sim.apps.mpp import players as mpp_players
from vpu_sim.apps.compositor import ALLOCATOR_COMM, compositor
from vpu_sim.apps.hold import hold
from vpu_sim.apps.m2m import DisplayExport, Progress, encode, play, transcode
from vpu_sim.apps.mpp.sizes import CODECS as MPP_CODECS
from vpu_sim.apps.mpp.sizes import ENC_CODECS as MPP_ENC_CODECS
from vpu_sim.apps.v4l2 import CODECS
from vpu_sim.boards import DRIVER_BOARDS, driver_of
from vpu_sim.driver import amphion
from vpu_sim.driver.daemon import ALLOCATORS, VpuDaemon
from vpu_sim.driver.faults import Faults, FaultSpec, parse_fault
from vpu_sim.driver.remote import socket_path
from vpu_sim.scenario.runner import run_scenario

T = TypeVar("T")

# What an application's failing ioctl most likely means here, after the kernel's own words.
HINTS = {
    errno.ENOMEM: "the CMA heap is full",
    errno.ETIMEDOUT: "the driver did not answer within memtrackfs's --driver-timeout: a stuck firmware?",
    errno.ENODEV: "the VPU driver went away",
}


def _argument(convert: Callable[[str], T]) -> Callable[[str], T]:
    """A converter as an argparse type: its ValueError sentence becomes the usage error."""
    def parse(text: str) -> T:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = convert.__name__
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpu-sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--mount", default="/", help="memtrackfs mount point (default: the real paths)")
        return p

    daemon = command("daemon", "run the simulated VPU driver")
    daemon.add_argument("--board", choices=DRIVER_BOARDS, default=None,
                        help="imx8qxp, imx8qm (Amphion VPU) or rk3588 (mpp_service); default: the mount's board "
                             "(imx8qxp for the default one)")
    daemon.add_argument("--fps", type=_argument(params.positive), default=30.0,
                        help="frames the firmware processes a second")
    daemon.add_argument("--allocator", choices=ALLOCATORS, default="dma-contig",
                        help="where vb2 planes come from: CMA (dma-contig), the system heap (dma-sg), or no DMA memory")
    daemon.add_argument("--fault", type=_argument(parse_fault), action="append", default=[], metavar="KIND[:PARAMS]",
                        help="inject a driver fault (repeatable): driver-leak:names=mbi+dcp, slow-firmware:frame_ms=N, "
                             "stuck-firmware[:at=S], resolution-storm:every_ms=N,sizes=WxH+WxH; see docs/scenarios.md")
    for name, help_text in (("play", "decode a simulated stream"), ("encode", "encode simulated frames"),
                            ("transcode", "decode and encode at once")):
        app = command(name, help_text)
        app.add_argument("--size", type=_argument(params.size), default=(1920, 1080))
        app.add_argument("--seconds", type=_argument(params.seconds), default=10.0)
        app.add_argument("--json", action="store_true", help="progress as JSON lines (what vpu-sim scenario reads)")
        if name != "transcode":
            app.add_argument("--board", choices=DRIVER_BOARDS, default=None,
                             help="rk3588: through dev/mpp_service, as MPP does (default: rk3588 where "
                                  "dev/mpp_service exists, else the Amphion V4L2 nodes)")
        if name == "play":
            app.add_argument("--codec", choices=sorted(set(CODECS) | set(MPP_CODECS)), default="h264")
        elif name == "encode":
            app.add_argument("--codec", choices=MPP_ENC_CODECS, default="h264",
                             help="h264, or hevc on rk3588 (the Amphion encoder makes h264 only)")
        else:
            app.add_argument("--codec", choices=sorted(CODECS), default="h264")
        if name == "play":
            app.add_argument("--export-to", metavar="DEVICE",
                             help=f"export decoded frames as dma-bufs attached to DEVICE (e.g. {amphion.DISPLAY_DEVICE})")
            app.add_argument("--playlist", type=_argument(params.count), default=1, metavar="N",
                             help="rk3588: play N videos in a row, each prepared before the previous one closes")
            app.add_argument("--keep-exports", type=_argument(params.seconds), metavar="SECONDS",
                             help="a bug on purpose: hand the exported dma-bufs to a helper (vpu-sim hold) that "
                                  "keeps them SECONDS after playback")
    holder = command("hold", "keep dma-bufs referenced for a while (a leaky compositor)")
    holder.add_argument("--seconds", type=_argument(params.seconds), required=True)
    holder.add_argument("--device", help="also attach and map them for this display")
    holder.add_argument("buffers", type=int, nargs="+", metavar="BUFFER", help="dma-buf inode numbers")
    comp = command("compositor", "a display server at its home screen: UI buffers on the display")
    comp.add_argument("--display", help="the display controller (default: the mount's board's, e.g. fdd90000.vop)")
    comp.add_argument("--seconds", type=_argument(params.seconds), help="how long (default: until SIGTERM/SIGINT)")
    comp.add_argument("--comm", default=ALLOCATOR_COMM, help=f"its process name (default {ALLOCATOR_COMM})")
    scenario = command("scenario", "run a scenario file: a driver with faults and a timeline of applications")
    scenario.add_argument("file", metavar="FILE", help="a scenario (TOML, see docs/scenarios.md)")
    return parser


def _error(command: str, exc: OSError) -> str:
    if exc.errno is None:
        return f"vpu-sim: {command}: {exc}"
    hint = HINTS.get(exc.errno)
    return f"vpu-sim: {command}: {exc.strerror}" + (f" ({hint})" if hint else "")


def _mount_board(mount: str) -> str:
    """The board of the mount (its socket's greeting); the default mount runs the i.MX8QXP."""
    with MemtrackClient(socket_path(mount)) as client:
        name = client.server.get("board")
    return name if name in DRIVER_BOARDS else "imx8qxp"


def _run_daemon(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    mount_board = _mount_board(args.mount)
    board = args.board or mount_board
    if driver_of(board) != driver_of(mount_board):
        raise OSError(errno.EINVAL, f"the mount's board is {mount_board}, whose VPU is not {board}'s: "
                                    f"mount it with --board {board}, or leave --board out")
    if driver_of(board) == "mpp":
        if args.fault:
            parser.error("--fault injects faults into the Amphion driver; the rk3588 driver has none")
        from vpu_sim.driver.mpp.daemon import MppDaemon
        return MppDaemon(socket_path(args.mount)).run()
    specs: list[FaultSpec] = args.fault
    try:
        faults = Faults.build(specs, origin=time.monotonic())
    except ValueError as exc:
        parser.error(str(exc))
    return VpuDaemon(socket_path(args.mount), board, args.fps, args.allocator, faults).run()


def _uses_mpp(args: argparse.Namespace, dev_dir: str) -> bool:
    if args.board is not None:
        return driver_of(args.board) == "mpp"
    return os.path.exists(os.path.join(dev_dir, mpp_players.NODE))


def _progress(args: argparse.Namespace, kind: str) -> Progress:
    width, height = args.size
    codec = args.codec if kind == "play" or args.command == "encode" else "h264"  # a transcode encodes h264
    return Progress(f"{kind} {width}x{height} {codec}", json_lines=args.json)


def _run_mpp(args: argparse.Namespace, parser: argparse.ArgumentParser, dev_dir: str) -> None:
    width, height = args.size
    if args.command == "encode":
        mpp_players.encode(dev_dir, socket_path(args.mount), args.codec, width, height, args.seconds,
                           _progress(args, "encode"))
        return
    if args.codec not in MPP_CODECS:
        parser.error(f"--codec {args.codec}: the RK3588 decoder plays {', '.join(MPP_CODECS)}")
    mpp_players.play(dev_dir, socket_path(args.mount), args.codec, width, height, args.seconds,
                     _progress(args, "play"), args.export_to, args.keep_exports, args.playlist)


def _run_play(args: argparse.Namespace, parser: argparse.ArgumentParser, dev_dir: str) -> None:
    width, height = args.size
    if args.codec not in CODECS:
        parser.error(f"--codec {args.codec}: the Amphion decoder plays {', '.join(sorted(CODECS))}")
    if args.playlist != 1:
        parser.error("--playlist is for the rk3588 player")
    progress = _progress(args, "play")
    export = DisplayExport(socket_path(args.mount), args.export_to) if args.export_to else None
    try:
        play(dev_dir, args.codec, width, height, args.seconds, progress, export)
        if export is not None and args.keep_exports is not None:
            pid = export.hand_over(args.keep_exports)
            progress.note("handed-over", f"handed {len(export.exported)} dma-bufs to helper pid {pid}, "
                                         f"which keeps them {args.keep_exports:g} s", helper=pid,
                          buffers=len(export.exported))
    finally:
        if export is not None:
            export.close()


def _board_display(mount: str) -> str:
    from memtrackfs.model.boards import board
    with MemtrackClient(socket_path(mount)) as client:
        return board(client.server.get("board") or "union").display


def main(argv: Optional[list[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "keep_exports", None) is not None and not args.export_to:
        parser.error("--keep-exports needs --export-to: only exported buffers can be kept")
    dev_dir = os.path.join(args.mount, "dev")
    try:
        if args.command == "daemon":
            return _run_daemon(args, parser)
        if args.command == "hold":
            return hold(socket_path(args.mount), args.buffers, args.seconds, args.device)
        if args.command == "compositor":
            display = args.display or _board_display(args.mount)
            return compositor(socket_path(args.mount), display, args.seconds, args.comm)
        if args.command == "scenario":
            return run_scenario(args.file, args.mount)
        width, height = args.size
        if args.command != "transcode" and _uses_mpp(args, dev_dir):
            _run_mpp(args, parser, dev_dir)
        elif args.command == "play":
            _run_play(args, parser, dev_dir)
        elif args.command == "encode":
            if args.codec != "h264":
                parser.error("--codec: the Amphion encoder makes h264 only")
            encode(dev_dir, width, height, args.seconds, _progress(args, "encode"))
        else:
            transcode(dev_dir, args.codec, width, height, args.seconds, _progress(args, "play"),
                      _progress(args, "encode"))
        return 0
    except OSError as exc:
        print(_error(args.command, exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
