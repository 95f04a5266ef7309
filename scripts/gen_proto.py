"""Regenerate the checked-in protobuf/gRPC code of proto/v1 (and its .pyi stubs).

Usage: python scripts/gen_proto.py [--check]
  --check  generate into a temporary folder and fail (exit 1) when the checked-in code differs.

The .proto files are compiled through the `cronraft/proto` symlink so that their import paths
(`cronraft/proto/v1/common.proto`) match the Python module paths (`cronraft.proto.v1.common_pb2`).
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    scripts = Path(sysconfig.get_path("scripts"))
    path = scripts / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            sys.exit(f"{name} not found: install the dev extras (pip install -e '.[dev]')")
        return found
    return str(path)


def generate(out: Path) -> None:
    protos = sorted(f"cronraft/proto/v1/{p.name}" for p in PROTO_DIR.glob("*.proto"))
    grpc_include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        "-I.",
        f"-I{grpc_include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    rc = protoc.main(args)
    if rc != 0:
        sys.exit(f"protoc failed with exit code {rc}")


def main() -> int:
    import os

    os.chdir(ROOT)
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        produced = sorted((out / "cronraft" / "proto" / "v1").iterdir())
        if check:
            stale = [
                p.name
                for p in produced
                if not (PROTO_DIR / p.name).exists() or not filecmp.cmp(p, PROTO_DIR / p.name, shallow=False)
            ]
            names = {p.name for p in produced}
            extra = [p.name for p in PROTO_DIR.iterdir() if p.name.endswith(SUFFIXES) and p.name not in names]
            if stale or extra:
                print(
                    "generated protobuf code is stale: run `make proto` "
                    f"(differs: {stale}, no longer generated: {extra})"
                )
                return 1
            print("generated protobuf code is up to date")
            return 0
        for p in PROTO_DIR.iterdir():
            if p.name.endswith(SUFFIXES):
                p.unlink()
        for p in produced:
            shutil.copyfile(p, PROTO_DIR / p.name)
        print(f"generated {len(produced)} files into {PROTO_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
