"""The ``memtrackfs`` command: mount, umount, replay."""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from memtrackfs import __version__
from memtrackfs.mounts import default_socket_path
from memtrackfs.trace import TraceError


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
    mount.add_argument("--heap", action="append", default=[], metavar="NAME[=SIZE]",
                       help="a DMA-BUF heap, repeatable: 'system' or 'system-*' (page-scattered RAM, "
                            "default 4G) or a CMA heap with its size, e.g. 'cma=256M' "
                            "(default: --heap system --heap cma=256M)")

    umount = sub.add_parser("umount", help="unmount and wait for the daemon to exit")
    umount.add_argument("mountpoint")

    replay = sub.add_parser("replay", help="apply a memtrack trace to a mount")
    replay.add_argument("trace")
    replay.add_argument("--mount", required=True, dest="mountpoint")
    replay.add_argument("--socket", help="driver socket (default: found from the mount table)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "mount":
            from memtrackfs.daemon import mount
            from memtrackfs.model.heaps import parse_heap_options
            heaps = parse_heap_options(args.heap)  # refused here, before anything is mounted
            return mount(args.mountpoint, args.socket or default_socket_path(args.mountpoint),
                         args.foreground, args.allow_other, args.driver_timeout, heaps)
        if args.command == "umount":
            from memtrackfs.daemon import umount
            return umount(args.mountpoint)
        from memtrackfs.replay import replay
        return replay(args.trace, args.mountpoint, args.socket)
    except TraceError as exc:
        print(f"memtrackfs: {args.trace}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"memtrackfs: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
