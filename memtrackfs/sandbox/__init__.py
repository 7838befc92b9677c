"""``memtrackfs run``: a command in a private mount namespace with the emulation at the real paths."""
