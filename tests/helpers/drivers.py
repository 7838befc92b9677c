"""Test drivers: small programs that register a device node on a mount's socket and answer its
forwarded calls their own way (each test's ``handle(ev)``), as vpu-sim does for its nodes."""
from __future__ import annotations


def driver_program(handle: str, client: str, device: str) -> str:
    """The program: ``handle`` defines ``handle(ev)``, run in a thread per forwarded call (it has
    ``client``, ``sys``, ``base64``, ``struct``, ``time``); it prints ``ready`` once DEVICE is
    registered and serves until it is killed. argv[1] is the socket; the rest is the test's."""
    return f"""import base64, struct, sys, threading, time
from memtrackfs.client import MemtrackClient
client = None
{handle}
def on_event(ev):
    if "call" in ev:
        threading.Thread(target=handle, args=(ev,)).start()
client = MemtrackClient(sys.argv[1], client={client!r}, on_event=on_event)
client.call("register_device", name={device!r})
print("ready", flush=True)
time.sleep(120)
"""
