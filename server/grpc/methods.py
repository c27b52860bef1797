"""The methods this server serves, "package.Service/Method": what an access table may grant.

Apart from app.py, which makes its metrics when imported: the configuration is read before
prometheus_client may be (server/__main__.py, several processes)."""

from __future__ import annotations

from aftersales.v1 import clawback_pb2, entry_pb2, events_pb2, sync_pb2

METHOD_NAMES = tuple(
    f"{service.full_name}/{method.name}"
    for module in (sync_pb2, entry_pb2, clawback_pb2, events_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
)
