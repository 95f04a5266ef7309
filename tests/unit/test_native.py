"""The native apply core (cronraft/_native.py): used only when built from the sources on disk, refused
loudly when required and absent, and a compiled replica stores the very bytes a pure-Python one does."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cronraft import _native

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """_native's decision made again, against a stamp file of the test's own."""
    stamp = tmp_path / "STAMP"
    monkeypatch.setattr(_native, "STAMP", stamp)
    monkeypatch.delenv(_native.ENV, raising=False)
    return stamp


def test_a_build_of_other_sources_is_not_used(fresh: Path) -> None:
    assert _native._decide() == (False, "not built (make native)")
    fresh.write_text("0" * 64 + "\n")
    assert _native._decide() == (False, "built from other sources (make native)")
    fresh.write_text(_native.source_digest() + "\n")
    assert _native._decide() == (True, "built and current")


def test_the_environment_forces_pure_python_or_requires_the_build(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh.write_text(_native.source_digest() + "\n")
    monkeypatch.setenv(_native.ENV, "0")
    assert _native._decide() == (False, "CRONRAFT_NATIVE=0")
    monkeypatch.setenv(_native.ENV, "1")
    assert _native._decide()[0]
    fresh.write_text("0" * 64 + "\n")
    with pytest.raises(ImportError, match="CRONRAFT_NATIVE=1 but the native apply core is built from other"):
        _native._decide()


def test_the_digest_covers_every_compiled_source() -> None:
    assert all(_native.source_file(m).is_file() for m in _native.MODULES)
    assert len(set(_native.MODULES)) == len(_native.MODULES)


def test_no_compiled_class_overrides_a_class_attribute() -> None:
    """A compiled subclass of an interpreted class does not override the base's class attributes (mypyc;
    raft.quota's QuotaExceeded answered INTERNAL instead of RESOURCE_EXHAUSTED): such classes live in a
    module that stays Python."""
    offenders = []
    for module in _native.MODULES:
        tree = ast.parse(_native.source_file(module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.bases:
                for item in node.body:
                    if isinstance(item, ast.Assign) or (isinstance(item, ast.AnnAssign) and item.value):
                        offenders.append(f"{module}.{node.name}")
    assert not offenders


# A history of every kind of change (tests/unit/test_search.py's) applied to a real LMDB store; prints
# whether the state machine ran compiled and a digest of every database's contents.
_REPLICA = """
import hashlib, json, sys, tempfile
from pathlib import Path
from cronraft import _native
from cronraft.raft.kv import DATABASES
from cronraft.raft.store import LmdbKV
from tests.unit import test_search
from tests.unit.statelog import Log

with tempfile.TemporaryDirectory() as tmp:
    kv = LmdbKV(Path(tmp) / "state", map_size=64 << 20)
    log = Log(kv)
    test_search.Log = lambda: log
    test_search._history()
    h = hashlib.sha256()
    with kv.read() as txn:
        for db in sorted(DATABASES):
            for k, v in txn.scan(db):
                h.update(db.encode() + len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v)
    kv.close()
print(json.dumps({"native": _native.in_use(), "digest": h.hexdigest(), "index": log.index}))
"""


def _replica(native: str) -> dict[str, object]:
    env = {**os.environ, _native.ENV: native}
    out = subprocess.run(
        [sys.executable, "-c", _REPLICA],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_compiled_replica_stores_the_same_bytes_as_a_pure_one() -> None:
    if not _native.STAMP.exists() or _native.STAMP.read_text().strip() != _native.source_digest():
        pytest.skip("the native apply core is not built from these sources (make native)")
    compiled, pure = _replica("1"), _replica("0")
    assert compiled["native"] is True and pure["native"] is False
    assert compiled["index"] == pure["index"] and int(str(compiled["index"])) > 200
    assert compiled["digest"] == pure["digest"]
