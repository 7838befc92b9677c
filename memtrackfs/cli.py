"""memtrackfs: the Linux media memory-tracking files (v4l2-memtrack, rk_dmabuf, dma-buf) on FUSE,
and the tools that read them (on a mount or on a real board)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from memtrackfs import __version__
from memtrackfs.clitext import HelpFormatter, error_text, subcommand
from memtrackfs.model.boards import BOARD_NAMES, DEFAULT_BOARD
from memtrackfs.mounts import default_socket_path
from memtrackfs.sandbox.command import SETUP_FAILED, RunError
from memtrackfs.tools.trace import TraceError

DEMO = "/tmp/memtrackfs"
MAX_SECONDS = 86400
SETTLE_MAX_SECONDS = 3600  # the socket's settle takes timeout_ms up to an hour (settle_ops.MAX_TIMEOUT_MS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memtrackfs", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"memtrackfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = subcommand(
        sub, "mount", "mount the emulated kernel files and start the driver socket",
        "Mounts the emulated files at MNT (the real paths under it: MNT/proc/rk_dmabuf/size, ...) and\n"
        "starts the driver socket; returns once the mount is usable, the daemon in the background.\n"
        "A stale mount at MNT (its daemon died) is detached and mounted afresh.",
        [f"memtrackfs mount {DEMO}", f"memtrackfs mount {DEMO} --heap system --heap cma=64M --driver-timeout 2",
         f"memtrackfs mount {DEMO} --board rk3588 --bsp 6.1"])
    mount.add_argument("mountpoint", metavar="MNT")
    mount.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    mount.add_argument("--socket", metavar="PATH",
                       help="the driver socket (default: <runtime dir>/<MNT with / as ->.sock, "
                            "/run/memtrackfs for root)")
    mount.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    mount.add_argument("--driver-timeout", type=_seconds, default=5.0, metavar="S",
                       help="how long a device-node call waits for its driver (default: 5, at most a day)")
    _add_board_options(mount)
    _add_heap_option(mount)

    umount = subcommand(sub, "umount", "unmount and wait for the daemon to exit",
                        examples=[f"memtrackfs umount {DEMO}"])
    umount.add_argument("mountpoint", metavar="MNT")

    run = subcommand(
        sub, "run", "run a command where the emulation is at the real paths (/proc, /sys/kernel/debug, /dev)",
        "Runs COMMAND in a private mount namespace over a fresh mount of the board's files, with the\n"
        "vpu-sim daemon (or a scenario) serving the board's device nodes (/dev/video0 and /dev/video1;\n"
        "rk3588: /dev/mpp_service); everything is torn down when COMMAND exits.\n"
        "Exit status: COMMAND's (128+N if signal N killed it); 125 run itself failed (or COMMAND ended\n"
        "before its --scenario did), 126 not executable, 127 not found.",
        ["memtrackfs run -- cat /proc/rk_dmabuf/size",
         "memtrackfs run -- vpu-sim play --seconds 5 --export-to display-subsystem",
         "memtrackfs run --scenario driver-leak -- leakwatch.sh -d 8",
         "memtrackfs run --board rk3588 -- cat /proc/mpp_service/sessions-summary"],
        usage="memtrackfs run [--board BOARD] [--bsp VERSION] [--no-vpu] [--scenario SCENARIO] "
              "[--heap NAME[=SIZE]] -- COMMAND...")
    _add_board_options(run)
    run.add_argument("--no-vpu", action="store_true", help="do not start the vpu-sim daemon")
    run.add_argument("--scenario", metavar="SCENARIO",
                     help="play a scenario beside COMMAND (a built-in name, see `vpu-sim scenario --list`, "
                          "or a file): its own driver and applications")
    _add_heap_option(run)
    run.add_argument("program", nargs=argparse.REMAINDER, metavar="COMMAND",
                     help="the command and its arguments, after --")

    settle = subcommand(
        sub, "settle", "wait until the releases of exited processes have been processed",
        "The kernel sends a device file's release in the background after its process exits, and\n"
        "the driver frees the instance only then; a connection's end frees what it held. settle\n"
        "returns once all of that is done for every process that has exited (udevadm settle's idea).\n"
        "Exit status: 0 settled, 1 still pending after the timeout (the message says what).",
        [f"vpu-sim play --mount {DEMO} --seconds 1 && memtrackfs settle --mount {DEMO} && "
         f"cat {DEMO}/sys/kernel/debug/v4l2-memtrack/amphion-vpu"])
    _add_mount_option(settle)
    settle.add_argument("--timeout", type=_settle_seconds, default=10.0, metavar="S",
                        help=f"give up after S seconds (default: 10, 0: do not wait, at most {SETTLE_MAX_SECONDS})")

    where = {"default": "/", "metavar": "MNT",
             "help": "read the files under this mount point (default: /, the real paths: a board's too)"}
    snapshot = subcommand(
        sub, "snapshot", "what the v4l2-memtrack and rk_dmabuf files show now",
        "Reads the v4l2-memtrack trees and the Rockchip dma-buf files, and prints per tracker its total\n"
        "and nodes, the dma-bufs, and per process the tracked bytes and dma-buf KiB.",
        [f"memtrackfs snapshot --mount {DEMO}", "memtrackfs snapshot --json > before.json   # on a board"])
    snapshot.add_argument("--mount", **where)
    snapshot.add_argument("--json", action="store_true", help="print JSON (for `memtrackfs diff`)")
    diff = subcommand(
        sub, "diff", "which nodes, buffers and processes grew between two JSON snapshots",
        "Exit status: 0 nothing grew, 1 something grew (like diff(1)), 2 a bad file.",
        ["memtrackfs diff before.json after.json"])
    diff.add_argument("before")
    diff.add_argument("after")
    record = subcommand(
        sub, "record", "sample the totals over time into a JSON-lines file",
        "Samples every tracker's total, each instance's usage (with its process), and the dma-buf\n"
        "size and peak, until the duration passes or Ctrl-C.",
        [f"memtrackfs record --mount {DEMO} --interval 0.5 --duration 30 --out usage.jsonl"])
    record.add_argument("--mount", **where)
    record.add_argument("--interval", type=_seconds, default=1.0, metavar="S", help="seconds between samples (default: 1)")
    record.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds (default: at Ctrl-C)")
    record.add_argument("--out", required=True, metavar="FILE", help="the JSON-lines file to write")
    metrics = subcommand(
        sub, "metrics", "every figure of the files in the Prometheus text format, or served over HTTP",
        "Tracker totals, each instance's usage (device, process, pid), what instances of exited processes\n"
        "still hold, Rockchip's dma-buf size and peak, dma-bufs per exporter, the CMA heap's used, free\n"
        "and largest free range: for node_exporter's textfile collector, or scraped with --listen\n"
        "(PORT 0: any free port, printed).",
        [f"memtrackfs metrics --mount {DEMO}",
         "memtrackfs metrics -o /var/lib/node_exporter/textfile_collector/media.prom   # on a board",
         "memtrackfs metrics --listen 0.0.0.0:9842"])
    metrics.add_argument("--mount", **where)
    metrics.add_argument("-o", "--output", metavar="FILE", help="write FILE atomically instead of printing")
    metrics.add_argument("--listen", metavar="ADDR:PORT", help="serve http://ADDR:PORT/metrics until Ctrl-C")
    plot = subcommand(sub, "plot", "draw a record as a PNG (needs matplotlib, the `plot` extra)",
                      examples=["memtrackfs plot usage.jsonl -o usage.png"])
    plot.add_argument("record", metavar="RECORD")
    plot.add_argument("-o", "--output", required=True, metavar="PNG")

    replay = subcommand(
        sub, "replay", "apply a memtrack trace to a mount",
        "Applies a trace (docs/spec/trace-format.md) through the mount's socket; TRACE is a file or\n"
        "the name of a trace shipped with memtrackfs (amphion-board).",
        [f"memtrackfs replay amphion-board --mount {DEMO}"])
    replay.add_argument("trace", metavar="TRACE")
    replay.add_argument("--mount", required=True, dest="mountpoint", metavar="MNT")
    replay.add_argument("--socket", metavar="PATH", help="the driver socket (default: found from the mount table)")

    capture = subcommand(
        sub, "capture", "a board's kernel files, as they read now, into one JSON file",
        "Reads the v4l2-memtrack trees, the dma-buf views (bufinfo, rk_dmabuf dev/sgt/size/peak, sysfs\n"
        "stats), the CMA heap's alloc_bitmap, Rockchip's dma_heap_info and mpp_service, dynamic debug\n"
        "and the kernel log, and keeps their text: a field report's evidence, and what `memtrackfs\n"
        "load` recreates in a mount.",
        ["memtrackfs capture -o board.json   # on the board, as root (debugfs)",
         f"memtrackfs capture --mount {DEMO} -o board.json"])
    capture.add_argument("--mount", **where)
    capture.add_argument("-o", "--output", required=True, metavar="FILE", help="the capture to write")
    load = subcommand(
        sub, "load", "recreate a captured board's state in a mount",
        "Checks the capture, then a process of its own recreates the trees, the dma-bufs (attachments,\n"
        "references, inode numbers, places, mappings), the peak, the CMA heaps' usage and mpp_service's\n"
        "settings through the mount's socket, and holds them (as the board's processes held their\n"
        "dma-bufs) until SIGTERM or the unmount. Mount the board's --board/--bsp/--heap first; what\n"
        "cannot be recreated (mpp_service sessions, ...) is in the README (Capture and load).",
        [f"memtrackfs mount {DEMO} --heap system --heap cma=256M && memtrackfs load board.json --mount {DEMO}",
         "memtrackfs mount /tmp/rk --board rk3588 --bsp 6.1 && memtrackfs load rk3588.json --mount /tmp/rk"])
    load.add_argument("capture", metavar="CAPTURE")
    load.add_argument("--mount", required=True, metavar="MNT", help="the memtrackfs mount to load into")
    load.add_argument("--foreground", action="store_true", help="hold the state in this process, until Ctrl-C")
    scripts = subcommand(
        sub, "scripts", "where the leak scripts for a board are, or one of them on stdout",
        "leakwatch.sh and rk-peak.sh are POSIX sh scripts that read the real paths: copy them to a\n"
        "board (busybox sh runs them).",
        ["memtrackfs scripts", "memtrackfs scripts leakwatch.sh > leakwatch.sh"])
    scripts.add_argument("name", nargs="?", metavar="NAME", help="print this script (default: list them)")
    return parser


def _add_board_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", choices=BOARD_NAMES, default=None,
                        help="the board whose kernel files exist: imx8qxp, imx8qm (v4l2-memtrack, no rk_*), "
                             "rk3588 (Rockchip's rk_dmabuf, rk_dma_heap, mpp_service), or union (default: every file)")
    parser.add_argument("--bsp", choices=("5.10", "6.1"), default=None,
                        help="rk3588 only: the BSP kernel whose /proc/mpp_service files to show (default 5.10, "
                             "the Rockchip DMABUF guide's)")


def _number_of_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def _seconds(text: str) -> float:
    """A duration option: a number of seconds > 0 and at most a day (not nan, inf or negative)."""
    value = _number_of_seconds(text)
    if not 0 < value <= MAX_SECONDS:  # NaN compares false too
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds > 0 and at most {MAX_SECONDS} (a day)")
    return value


def _settle_seconds(text: str) -> float:
    """settle --timeout: from 0 (look once, do not wait) to an hour, the socket's limit for a settle."""
    value = _number_of_seconds(text)
    if not 0 <= value <= SETTLE_MAX_SECONDS:  # NaN compares false too
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds from 0 to {SETTLE_MAX_SECONDS} (an hour)")
    return value


def _add_heap_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heap", action="append", default=[], metavar="NAME[=SIZE]",
                        help="a DMA-BUF heap, repeatable, instead of the board's: 'system' or 'system-*' "
                             "(page-scattered RAM, default 4G) or a CMA heap with its size, e.g. 'cma=256M' "
                             "(the default board's: --heap system --heap cma=256M)")


def _add_mount_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mount", metavar="MNT",
                        help="the memtrackfs mount (default: $MEMTRACKFS_SOCKET's, as inside `memtrackfs run`, "
                             "else the one memtrackfs mount there is)")


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    parser = args.command_parser
    try:
        if args.command == "mount":
            from memtrackfs.daemon import MountOptions, mount
            from memtrackfs.model.heaps import parse_heap_options
            board_name = _board(parser, args)
            heaps = parse_heap_options(args.heap) if args.heap else None  # refused here, before anything is mounted
            options = MountOptions(args.socket or default_socket_path(args.mountpoint), args.allow_other,
                                   args.driver_timeout, heaps, board_name, args.bsp)
            return mount(args.mountpoint, options, args.foreground)
        if args.command == "run":
            return _run(parser, args)
        if args.command == "umount":
            from memtrackfs.daemon import umount
            return umount(args.mountpoint)
        if args.command == "settle":
            return _settle(args)
        if args.command == "scripts":
            return _scripts(args)
        if args.command in ("snapshot", "diff", "record", "plot", "capture", "load", "metrics"):
            return _observe(parser, args)
        from memtrackfs.tools.replay import replay
        return replay(args.trace, args.mountpoint, args.socket)
    except RunError as exc:
        print(f"memtrackfs: run: {exc}", file=sys.stderr)
        return exc.status
    except TraceError as exc:
        print(f"memtrackfs: {args.trace}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"memtrackfs: {args.command}: {error_text(exc)}", file=sys.stderr)
        return SETUP_FAILED if args.command == "run" else 1
    except KeyboardInterrupt:
        return 130


def _settle(args: argparse.Namespace) -> int:
    from memtrackfs.client import MemtrackClient
    from memtrackfs.mounts import find_socket
    with MemtrackClient(find_socket(args.mount), client="memtrackfs settle") as client:
        client.call("settle", timeout_ms=round(args.timeout * 1000), timeout=args.timeout + 30)
    return 0


def _metrics(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from memtrackfs.tools import metrics
    from memtrackfs.tools.snapshot import require_kernel_files
    require_kernel_files(args.mount)
    if args.listen is None:
        data = metrics.exposition(args.mount)
        if args.output is None:
            sys.stdout.buffer.write(data)
        else:
            metrics.write_atomically(args.output, data)
        return 0
    address, _, port = args.listen.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        parser.error(f"--listen takes ADDR:PORT (e.g. 127.0.0.1:9842), not {args.listen!r}")
    import signal
    import threading

    from prometheus_client import start_http_server
    server, _thread = start_http_server(int(port), address.strip("[]") or "0.0.0.0", metrics.registry_for(args.mount))
    host, bound = server.server_address[:2]  # port 0: the one the kernel chose
    print(f"memtrackfs: metrics of {os.path.abspath(args.mount)} on http://{address or host}:{bound}/metrics",
          flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.shutdown()
    return 0


def _scripts(args: argparse.Namespace) -> int:
    from memtrackfs.bundled import leak_scripts
    scripts = leak_scripts()
    if args.name is None:
        for name, path in scripts.items():
            print(f"{name}  {path}")
        return 0
    path = scripts.get(args.name)
    if path is None:
        raise OSError(f"no script {args.name!r}; there are: {', '.join(scripts)}")
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def _observe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from memtrackfs.tools import plot, record, snapshot
    if args.command in ("snapshot", "record", "capture"):
        snapshot.require_kernel_files(args.mount)
    try:
        if args.command == "metrics":
            return _metrics(parser, args)
        if args.command == "snapshot":
            snap = snapshot.take_snapshot(args.mount)
            for path, problem in snap["unreadable"].items():
                print(f"memtrackfs: snapshot: {snapshot.shown(path)} skipped: {problem}", file=sys.stderr)
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
        if args.command == "capture":
            from memtrackfs.tools.capture import capture, dumps
            data = capture(args.mount)
            with open(args.output, "w", encoding="utf-8") as out:
                out.write(dumps(data))
            print(f"memtrackfs: captured {len(data['files'])} files of {data['root']} into {args.output}"
                  + (f"; unreadable: {', '.join(data['unreadable'])}" if data["unreadable"] else ""))
            return 0
        if args.command == "load":
            from memtrackfs.tools.load import load
            return load(args.capture, args.mount, args.foreground)
        plot.plot(args.record, args.output)
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
        parser.error("no COMMAND given (memtrackfs run [OPTIONS] -- COMMAND...)")
    board_name = _board(parser, args) if args.board or args.bsp else None
    parse_heap_options(args.heap)  # refused here, before anything is mounted
    return run(command, board_name, args.bsp, not args.no_vpu, args.heap, args.scenario)
