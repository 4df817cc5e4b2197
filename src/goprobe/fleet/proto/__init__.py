"""The fleet's gRPC protocol: ``fleet.proto`` and the modules generated from it (``python -m
goprobe.fleet.proto.generate`` rewrites them; a test checks they are what it generates)."""
