"""The late after-sales entry and commission clawback service."""

import os

# gRPC's C core writes lines of its own on stderr, not JSON, at ERROR one per request whose
# headers it cannot parse (a caller could flood the log): off unless asked for with
# GRPC_VERBOSITY (ERROR, INFO or DEBUG), which the core reads once, when gRPC is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
