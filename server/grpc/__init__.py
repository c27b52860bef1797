"""The gRPC layer: servicers translate protobuf to use cases and back; the app serves them.

One module per proto file's service (sync.py, entries.py, clawbacks.py) holds its servicer and
the reading of its requests; resources.py renders the shared messages; status.py turns refusals
into rich statuses. Nothing here decides a rule or touches the store.
"""
