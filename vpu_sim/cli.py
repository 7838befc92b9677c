"""vpu-sim: the simulated VPU drivers (NXP Amphion, Rockchip mpp_service), applications that use
them, and scenarios.

Every command takes --mount MNT (a memtrackfs mount); without it the real paths are used
(/dev/video*, /dev/mpp_service, and the socket from $MEMTRACKFS_SOCKET or the mount table), which
is what a user gets inside `memtrackfs run`.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from typing import Callable, Optional, Sequence, TypeVar, Union

from memtrackfs import __version__, bundled
from memtrackfs.client import MemtrackClient
from memtrackfs.clitext import HelpFormatter, error_text, subcommand
from memtrackfs.launch import READY
from vpu_sim import params
from vpu_sim.apps.compositor import ALLOCATOR_COMM, compositor
from vpu_sim.apps.hold import hold
from vpu_sim.apps.m2m import DisplayExport, Progress, encode, play, transcode
from vpu_sim.apps.mpp import players as mpp_players
from vpu_sim.apps.mpp.sizes import CODECS as MPP_CODECS
from vpu_sim.apps.mpp.sizes import ENC_CODECS as MPP_ENC_CODECS
from vpu_sim.apps.v4l2 import CODECS
from vpu_sim.boards import DRIVER_BOARDS, MPP_NODES, driver_of
from vpu_sim.driver.amphion import model as amphion
from vpu_sim.driver.amphion.daemon import ALLOCATORS, NODE_NAMES, VpuDaemon
from vpu_sim.driver.amphion.faults import Faults, FaultSpec, parse_fault
from vpu_sim.driver.amphion.model import CoreKind
from vpu_sim.driver.mpp.daemon import MppDaemon
from vpu_sim.driver.remote import socket_path
from vpu_sim.scenario.library import listing
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
    parser = argparse.ArgumentParser(prog="vpu-sim", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"vpu-sim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
        p = subcommand(sub, name, summary, description, examples)
        p.add_argument("--mount", default="/", metavar="MNT",
                       help="the memtrackfs mount point (default: / , the real paths, as inside `memtrackfs run`)")
        return p

    faults_doc = bundled.doc("scenarios.md")
    daemon = command(
        "daemon", "run the simulated VPU driver",
        f"The board's simulated VPU driver, until SIGTERM/SIGINT. Amphion (imx8qxp, imx8qm): creates the\n"
        f"amphion-vpu tracker root with the cores' fw/rpc and serves dev/{NODE_NAMES[CoreKind.DECODER]} (decoder) "
        f"and dev/{NODE_NAMES[CoreKind.ENCODER]}\n(encoder). rk3588: Rockchip's mpp_service driver, serving "
        f"dev/{MPP_NODES[0]} (each open an MPP session).\n"
        f"Prints '{READY} ...' on stdout once its nodes are registered (starters wait for that line).",
        ["vpu-sim daemon --mount /tmp/memtrackfs",
         "vpu-sim daemon --mount /tmp/memtrackfs --board imx8qm --fault driver-leak:names=mbi+dcp",
         "vpu-sim daemon --mount /tmp/rk   # a mount made with --board rk3588"])
    daemon.add_argument("--board", choices=DRIVER_BOARDS, default=None,
                        help="imx8qxp, imx8qm (Amphion VPU) or rk3588 (mpp_service) (default: the mount's board; "
                             "imx8qxp for the default one)")
    daemon.add_argument("--fps", type=_argument(params.positive), default=30.0,
                        help="frames the firmware processes a second (default: 30)")
    daemon.add_argument("--allocator", choices=ALLOCATORS, default="dma-contig",
                        help="where vb2 planes come from: CMA (dma-contig), the system heap (dma-sg), or no DMA "
                             "memory (vmalloc) (default: dma-contig)")
    daemon.add_argument("--fault", type=_argument(parse_fault), action="append", default=[], metavar="KIND[:PARAMS]",
                        help="inject a driver fault (repeatable): driver-leak:names=mbi+dcp, slow-firmware:frame_ms=N, "
                             f"stuck-firmware[:at=S], resolution-storm:every_ms=N,sizes=WxH+WxH; see {faults_doc}")
    apps = {
        "play": ("decode a simulated stream",
                 "Decodes a simulated stream through the decoder node, as a V4L2 player does, printing its\n"
                 "progress and V4L2_CID_MEMORY_USAGE (in place on a terminal, a line a second otherwise).",
                 ["vpu-sim play --mount /tmp/memtrackfs --seconds 5",
                  "vpu-sim play --mount /tmp/memtrackfs --size 3840x2160 --export-to display-subsystem"]),
        "encode": ("encode simulated frames", "Encodes NV12 frames to H.264 through the encoder node.",
                   ["vpu-sim encode --mount /tmp/memtrackfs --size 1280x720 --seconds 5"]),
        "transcode": ("decode and encode at once", "A decode and an encode of the same size at once (two instances).",
                      ["vpu-sim transcode --mount /tmp/memtrackfs --seconds 5"]),
    }
    for name, (summary, description, examples) in apps.items():
        app = command(name, summary, description, examples)
        app.add_argument("--size", type=_argument(params.size), default=(1920, 1080), metavar="WxH",
                         help="the stream's size (default: 1920x1080)")
        app.add_argument("--seconds", type=_argument(params.seconds), default=10.0, metavar="S",
                         help="how long to run (default: 10)")
        app.add_argument("--json", action="store_true", help="progress as JSON lines (what vpu-sim scenario reads)")
        if name != "transcode":
            app.add_argument("--board", choices=DRIVER_BOARDS, default=None,
                             help="rk3588: through dev/mpp_service, as MPP does (default: rk3588 where "
                                  "dev/mpp_service exists, else the Amphion V4L2 nodes)")
        if name == "play":
            app.add_argument("--codec", choices=sorted(set(CODECS) | set(MPP_CODECS)), default="h264",
                             help="the stream's codec (default: h264)")
        elif name == "encode":
            app.add_argument("--codec", choices=MPP_ENC_CODECS, default="h264",
                             help="h264, or hevc on rk3588 (the Amphion encoder makes h264 only) (default: h264)")
        else:
            app.add_argument("--codec", choices=sorted(CODECS), default="h264",
                             help="the stream's codec (default: h264)")
        if name == "play":
            app.add_argument("--export-to", metavar="DEVICE",
                             help="export decoded frames as dma-bufs attached to DEVICE "
                                  f"(e.g. {amphion.DISPLAY_DEVICE})")
            app.add_argument("--playlist", type=_argument(params.count), default=1, metavar="N",
                             help="rk3588: play N videos in a row, each prepared before the previous one closes "
                                  "(default: 1)")
            app.add_argument("--keep-exports", type=_argument(params.seconds), metavar="SECONDS",
                             help="a bug on purpose: hand the exported dma-bufs to a helper (vpu-sim hold) that "
                                  "keeps them SECONDS after playback")
    holder = command("hold", "keep dma-bufs referenced for a while (a leaky compositor)",
                     "Takes a reference on each dma-buf (as receiving its fd does), prints one line, and keeps\n"
                     "them for SECONDS, or until SIGTERM/SIGINT or the mount goes away.",
                     ["vpu-sim hold --mount /tmp/memtrackfs --seconds 30 41 42"])
    holder.add_argument("--seconds", type=_argument(params.seconds), required=True, metavar="S",
                        help="how long to keep them")
    holder.add_argument("--device", help="also attach and map them for this display")
    holder.add_argument("buffers", type=int, nargs="+", metavar="BUFFER", help="dma-buf inode numbers")
    comp = command("compositor", "a display server at its home screen: UI buffers on the display",
                   "Allocates the home screen's UI and framebuffer dma-bufs (named <tgid>-<comm>, as the\n"
                   "Rockchip BSP names them) and keeps them attached and mapped for the display controller\n"
                   "until SECONDS pass or SIGTERM/SIGINT.",
                   ["vpu-sim compositor --mount /tmp/rk --seconds 60"])
    comp.add_argument("--display", help="the display controller (default: the mount's board's, e.g. fdd90000.vop)")
    comp.add_argument("--seconds", type=_argument(params.seconds), metavar="S",
                      help="how long (default: until SIGTERM/SIGINT)")
    comp.add_argument("--comm", default=ALLOCATOR_COMM, help=f"its process name (default: {ALLOCATOR_COMM})")
    scenario = command(
        "scenario", "run a scenario: a driver with faults and a timeline of applications",
        f"Loads its own driver (the scenario's board and faults), prints '{READY} ...' once its nodes\n"
        f"are registered, plays the timeline with a live view, then prints a summary. SCENARIO is a\n"
        f"built-in scenario's name (--list shows them) or a TOML file (format: {faults_doc}).\n"
        "Exit status: 0 it ran, 1 it could not run, 2 a bad file, 130 interrupted (SIGINT).",
        ["vpu-sim scenario --list", "vpu-sim scenario driver-leak --mount /tmp/memtrackfs",
         "vpu-sim scenario ./my-scenario.toml --mount /tmp/memtrackfs"])
    scenario.add_argument("file", metavar="SCENARIO", nargs="?", help="a built-in scenario's name, or a TOML file")
    scenario.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    return parser


def _error(command: str, exc: OSError) -> str:
    if exc.errno is None:
        return f"vpu-sim: {command}: {exc}"
    hint = HINTS.get(exc.errno)
    return f"vpu-sim: {command}: {error_text(exc)}" + (f" ({hint})" if hint else "")


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
    daemon: Union[VpuDaemon, MppDaemon]
    if driver_of(board) == "mpp":
        if args.fault:
            parser.error("--fault injects faults into the Amphion driver; the rk3588 driver has none")
        daemon = MppDaemon(socket_path(args.mount))
        nodes = ", ".join(f"dev/{name}" for name in MPP_NODES)
    else:
        specs: list[FaultSpec] = args.fault
        try:
            faults = Faults.build(specs, origin=time.monotonic())
        except ValueError as exc:
            parser.error(str(exc))
        daemon = VpuDaemon(socket_path(args.mount), board, args.fps, args.allocator, faults)
        nodes = ", ".join(f"{kind.value} dev/{name}" for kind, name in NODE_NAMES.items())
    print(f"{READY} {board}: {nodes} (pid {os.getpid()})", flush=True)
    return daemon.run()


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
    args = _parser().parse_args(argv)
    parser = args.command_parser
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
            if args.list:
                print(listing(), end="")
                return 0
            if args.file is None:
                parser.error("give a SCENARIO (a built-in name or a file), or --list")
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
