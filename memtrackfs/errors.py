"""The one error type the emulated kernel raises: an errno and a sentence for the user."""
from __future__ import annotations

import errno as _errno


class KernelError(OSError):
    """A refused operation, as the kernel would refuse it: ``errno`` plus a clear message.

    Raised before any state changes, so a refused request leaves the model as it was. It is an
    OSError so that the FUSE layer (fusepy and mfusepy alike) answers the caller with its errno.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.message = message

    @property
    def errno_name(self) -> str:
        return _errno.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        return f"{self.errno_name}: {self.message}"
