"""``sys/kernel/debug/dynamic_debug/control``: the listing (read) and the query parser (write)."""
from __future__ import annotations

import errno
import os

from memtrackfs.errors import KernelError
from memtrackfs.model.kmsg import DebugSite

_HEADER = "# filename:lineno [module]function flags format\n"
USER_BUF_PAGE = 4096
_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", '"': '\\"'}


def render_dynamic_debug_control(sites: list[DebugSite]) -> bytes:
    """As ddebug_proc_show(): ``file:line [module]function =flags "escaped format"``."""
    lines = [_HEADER]
    for site in sites:
        fmt = "".join(_ESCAPES.get(ch, ch) for ch in site.format)
        flags = "p" if site.enabled else "_"
        lines.append(f'{site.filename}:{site.lineno} [{site.module}]{site.function} ={flags} "{fmt}"\n')
    return "".join(lines).encode("utf-8")


def _matches(site: DebugSite, keyword: str, value: str) -> bool:
    if keyword == "file":
        return value in (site.filename, os.path.basename(site.filename))
    if keyword == "module":
        return value == site.module
    return value == site.function  # keyword == "func"


def parse_dynamic_debug_query(sites: list[DebugSite], data: bytes) -> list[tuple[list[DebugSite], bool]]:
    """ddebug_exec_queries(): ``KEYWORD VALUE [KEYWORD VALUE...] +p|-p|=p|=_`` for the sites
    listed; anything else EINVAL. Returns (sites, enabled) per query, for the caller to apply.

    Several queries may be separated by ';' or newlines, as the kernel accepts. As
    ddebug_proc_write(), a write of USER_BUF_PAGE (4096) bytes or more is E2BIG: FUSE hands a
    long write over in pieces, and none of them may be applied.
    """
    if len(data) >= USER_BUF_PAGE:
        raise KernelError(errno.E2BIG, f"a dynamic_debug/control write takes less than {USER_BUF_PAGE} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KernelError(errno.EINVAL, "dynamic_debug/control takes ASCII queries") from None
    changes: list[tuple[list[DebugSite], bool]] = []
    for query in text.replace(";", "\n").splitlines():
        words = query.split()
        if not words:
            continue
        *terms, flags = words
        if flags not in ("+p", "-p", "=p", "=_") or not terms or len(terms) % 2:
            raise KernelError(errno.EINVAL, f"bad query {query.strip()!r}: want e.g. 'file v4l2-memtrack.c +p'")
        selected = list(sites)
        for keyword, value in zip(terms[::2], terms[1::2]):
            if keyword not in ("file", "module", "func"):
                raise KernelError(errno.EINVAL, f"unknown keyword {keyword!r} in query {query.strip()!r}")
            selected = [site for site in selected if _matches(site, keyword, value)]
        if not selected:
            raise KernelError(errno.EINVAL, f"query {query.strip()!r} matches no debug site")
        changes.append((selected, flags in ("+p", "=p")))
    if not changes:
        raise KernelError(errno.EINVAL, "empty dynamic_debug query")
    return changes
