"""The threads a server process serves calls on, and how many of each by default."""

from __future__ import annotations

# RPC worker threads of a process, by default. The calls are CPU work under one GIL, and each
# database statement lets the GIL go and takes it back, a handover contended the more threads
# there are: with 16 calls in flight on a 2-core machine, SQLite's reads served 5-20% more calls
# per second with 4 threads per process than with 8 (PostgreSQL's alike within the noise); with
# 2, a process had fewer writes queued to commit together (SQLite's group commit).
DEFAULT_WORKERS = 4
# The most RPC worker threads one process may have; more only adds contention for the GIL.
MAX_WORKERS = 256
# Event streams a process serves at once, by default: each holds a thread of its own while it
# lasts, not an RPC worker.
DEFAULT_MAX_STREAMS = 4
# The most event streams one process may serve at once.
MAX_STREAMS = 1024
