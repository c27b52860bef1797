"""A serving process settles its heap before it serves (server.processes.settle_heap): the
objects its start made are left out of the garbage collector's full collections, which would
otherwise walk them all, every thread waiting, every several seconds under load."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a process of its own: settling this one would change what the other tests collect.
_SETTLE = """
import gc, json
import server.grpc.app  # what a server process holds once started: the modules, the protos
before = len(gc.get_objects())
from server.processes import settle_heap
settled = settle_heap()
cycle = []
cycle.append(cycle)  # made while serving
print(json.dumps({"before": before, "settled": settled, "walked": len(gc.get_objects())}))
"""


def test_the_objects_of_a_start_are_left_out_of_full_collections():
    done = subprocess.run(
        [sys.executable, "-c", _SETTLE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)

    # Every object the collector tracked is settled, and a full collection then walks only what
    # was made since.
    assert seen["settled"] >= seen["before"] > 10_000
    assert seen["walked"] < 100
