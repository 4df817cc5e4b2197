"""Regenerate ``fleet_pb2.py`` and ``fleet_pb2_grpc.py`` from ``fleet.proto`` (grpcio-tools).

Usage: python -m goprobe.fleet.proto.generate [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[2]  # .../src: the generated modules import each other as goprobe.fleet.proto.*


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    proto = HERE.relative_to(SRC) / "fleet.proto"
    args = ["protoc", f"-I{SRC}", f"--python_out={out}", f"--grpc_python_out={out}", str(proto)]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + str(proto))
    made = out / proto.parent
    return [made / "fleet_pb2.py", made / "fleet_pb2_grpc.py"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=SRC)
    args = ap.parse_args()
    for p in generate(args.out):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
