"""What every simulated driver does with the calls memtrackfs forwards from its device nodes:
answer each with ``complete`` (0 and the output bytes, or the errno name of the OSError its
handler raised), and serve until SIGTERM/SIGINT or until memtrackfs goes away."""
from __future__ import annotations

import base64
import errno
import signal
import threading
from typing import Any, Callable

from memtrackfs.client import MemtrackClient, MemtrackError

Handler = Callable[[dict[str, Any]], bytes]


def answer(client: MemtrackClient, event: dict[str, Any], handle: Handler) -> None:
    result: Any = 0
    out = b""
    try:
        out = handle(event)
    except OSError as exc:
        result = errno.errorcode.get(exc.errno or errno.EIO, "EIO")
    try:
        client.call("complete", call=event["call"], result=result, out=base64.b64encode(out).decode())
    except (MemtrackError, ConnectionError):
        pass  # the caller timed out or memtrackfs went away: nobody waits for this answer


def answer_in_thread(client: MemtrackClient, event: dict[str, Any], handle: Handler) -> None:
    """Each call in its own thread: a blocking one (DQBUF, POLL_HW_FINISH) must not hold up the
    others, and the socket's reader thread must stay free to deliver what they wait for."""
    threading.Thread(target=answer, args=(client, event, handle), daemon=True).start()


def wait_until_stopped(client: MemtrackClient) -> bool:
    """Block until SIGTERM/SIGINT (True: remove the driver cleanly) or until memtrackfs closes
    the connection (False)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and not client.closed.is_set():
        stop.wait(0.2)
    return not client.closed.is_set()
