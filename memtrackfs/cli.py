"""The ``memtrackfs`` command: mount, umount, replay, run, snapshot, diff, record, plot."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from memtrackfs import __version__
from memtrackfs.model.boards import BOARD_NAMES, DEFAULT_BOARD
from memtrackfs.mounts import default_socket_path
from memtrackfs.sandbox.command import SETUP_FAILED, RunError
from memtrackfs.tools.trace import TraceError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memtrackfs", description=__doc__)
    parser.add_argument("--version", action="version", version=f"memtrackfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    mount = sub.add_parser("mount", help="mount the emulated kernel files and start the driver socket")
    mount.add_argument("mountpoint")
    mount.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    mount.add_argument("--socket", help="driver socket path (default: /run/memtrackfs/<mountpoint>.sock)")
    mount.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    mount.add_argument("--driver-timeout", type=float, default=5.0, metavar="SECONDS",
                       help="how long a device-node call waits for its driver (default 5)")
    _add_board_options(mount)
    _add_heap_option(mount)
    mount.add_argument("--proc-union", metavar="PATH",
                       help="list every real /proc entry in proc/ too, as a link to PATH/NAME "
                            "(how `memtrackfs run` serves /proc; PATH: where it binds the real procfs)")

    umount = sub.add_parser("umount", help="unmount and wait for the daemon to exit")
    umount.add_argument("mountpoint")

    replay = sub.add_parser("replay", help="apply a memtrack trace to a mount")
    replay.add_argument("trace")
    replay.add_argument("--mount", required=True, dest="mountpoint")
    replay.add_argument("--socket", help="driver socket (default: found from the mount table)")

    run = sub.add_parser("run", help="run a command in a private mount namespace where the emulation "
                                     "is at the real paths (/proc, /sys/kernel/debug, /dev)",
                         usage="memtrackfs run [--board BOARD] [--bsp VERSION] [--no-vpu] [--scenario FILE] "
                               "[--heap NAME[=SIZE]] -- COMMAND...")
    _add_board_options(run)
    run.add_argument("--no-vpu", action="store_true", help="do not start the vpu_sim daemon")
    run.add_argument("--scenario", metavar="FILE",
                     help="play a scenario (vpu-sim scenario FILE: its own driver and applications) beside COMMAND")
    _add_heap_option(run)
    run.add_argument("program", nargs=argparse.REMAINDER, metavar="COMMAND",
                     help="the command and its arguments, after --")

    where = {"default": "/", "help": "read the files under this mount point (default: the real paths)"}
    snapshot = sub.add_parser("snapshot", help="what the v4l2-memtrack and rk_dmabuf files show now")
    snapshot.add_argument("--mount", **where)
    snapshot.add_argument("--json", action="store_true", help="print JSON (for `memtrackfs diff`)")
    diff = sub.add_parser("diff", help="which nodes, buffers and processes grew between two JSON snapshots")
    diff.add_argument("before")
    diff.add_argument("after")
    record = sub.add_parser("record", help="sample the totals over time into a JSON-lines file")
    record.add_argument("--mount", **where)
    record.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    record.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    record.add_argument("--out", required=True, metavar="FILE")
    plot = sub.add_parser("plot", help="draw a record as a PNG (needs matplotlib: memtrackfs[plot])")
    plot.add_argument("record")
    plot.add_argument("-o", "--output", required=True, metavar="PNG")
    return parser


def _add_board_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", choices=BOARD_NAMES, default=None,
                        help="the board whose kernel files exist: imx8qxp, imx8qm (v4l2-memtrack, no rk_*), "
                             "rk3588 (Rockchip's rk_dmabuf, rk_dma_heap, mpp_service), or union (default: every file)")
    parser.add_argument("--bsp", choices=("5.10", "6.1"), default=None,
                        help="rk3588 only: the BSP kernel whose /proc/mpp_service files to show (default 5.10, "
                             "the Rockchip DMABUF guide's)")


def _add_heap_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heap", action="append", default=[], metavar="NAME[=SIZE]",
                        help="a DMA-BUF heap, repeatable, instead of the board's: 'system' or 'system-*' "
                             "(page-scattered RAM, default 4G) or a CMA heap with its size, e.g. 'cma=256M' "
                             "(the default board's: --heap system --heap cma=256M)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "mount":
            from memtrackfs.daemon import MountOptions, mount
            from memtrackfs.model.heaps import parse_heap_options
            board_name = _board(parser, args)
            heaps = parse_heap_options(args.heap) if args.heap else None  # refused here, before anything is mounted
            if args.proc_union is not None and not os.path.isabs(args.proc_union):
                parser.error("--proc-union: PATH must be absolute (the links are read in another namespace)")
            options = MountOptions(args.socket or default_socket_path(args.mountpoint), args.allow_other,
                                   args.driver_timeout, heaps, args.proc_union, board_name, args.bsp)
            return mount(args.mountpoint, options, args.foreground)
        if args.command == "run":
            return _run(parser, args)
        if args.command == "umount":
            from memtrackfs.daemon import umount
            return umount(args.mountpoint)
        if args.command in ("snapshot", "diff", "record", "plot"):
            return _observe(args)
        from memtrackfs.tools.replay import replay
        return replay(args.trace, args.mountpoint, args.socket)
    except RunError as exc:
        print(f"memtrackfs: run: {exc}", file=sys.stderr)
        return exc.status
    except TraceError as exc:
        print(f"memtrackfs: {args.trace}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"memtrackfs: error: {exc.strerror or exc}", file=sys.stderr)
        return SETUP_FAILED if args.command == "run" else 1
    except KeyboardInterrupt:
        return 130


def _observe(args: argparse.Namespace) -> int:
    from memtrackfs.tools import record, snapshot
    try:
        if args.command == "snapshot":
            snap = snapshot.take_snapshot(args.mount)
            print(json.dumps(snap, indent=1) if args.json else snapshot.render_snapshot(snap), end="\n" if args.json else "")
            return 0
        if args.command == "diff":
            text, grew = snapshot.diff_snapshots(snapshot.load_snapshot(args.before), snapshot.load_snapshot(args.after))
            print(text, end="")
            return 1 if grew else 0  # like diff(1): 1 when something grew
        if args.command == "record":
            with open(args.out, "w", encoding="utf-8") as out:
                taken = record.record(args.mount, args.interval, out, args.duration)
            print(f"memtrackfs: {taken} samples in {args.out}")
            return 0
        record.plot(args.record, args.output)
        print(f"memtrackfs: wrote {args.output}")
        return 0
    except ValueError as exc:  # a file that is not what it should be
        print(f"memtrackfs: {args.command}: {exc}", file=sys.stderr)
        return 2


def _board(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    name = args.board or DEFAULT_BOARD
    if args.bsp is not None and name != "rk3588":
        parser.error(f"--bsp is for --board rk3588 (its BSP kernels), not {name}")
    return name


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from memtrackfs.model.heaps import parse_heap_options
    from memtrackfs.sandbox.run import run
    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        parser.error("run: no COMMAND given (memtrackfs run [OPTIONS] -- COMMAND...)")
    board_name = _board(parser, args) if args.board or args.bsp else None
    parse_heap_options(args.heap)  # refused here, before anything is mounted
    return run(command, board_name, args.bsp, not args.no_vpu, args.heap, args.scenario)
