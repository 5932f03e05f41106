"""Generate hub/v1/*_pb2*.py from protos/hub/v1/*.proto (``python -m hub.protogen``).

The generated modules are committed; tests/unit/test_protos.py regenerates into a temporary
directory and fails if they differ, so nobody edits them by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "hub" / "v1").glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
