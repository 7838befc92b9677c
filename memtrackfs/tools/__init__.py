"""The user's tools: they read the kernel files (snapshot, diff, record, plot) or talk to the socket (replay)."""
