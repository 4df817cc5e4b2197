"""The fleet: a control plane (``goprobe server``), an agent per machine (``goprobe agent``), clients
(:class:`goprobe.fleet.client.Client`). Protocol: ``proto/fleet.proto``; docs/fleet.md."""

import os

# gRPC's C core logs at INFO whenever a process with gRPC threads forks (goprobe forks its compiler and pause
# helper): noise for an operator, not a fault.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
