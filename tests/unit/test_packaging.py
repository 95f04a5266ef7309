"""Packaging: only the `cronraft` import package is installed (no generic top-level `daemon`, `raft`,
`client`, `proto`, `timerwheel`, names that are taken on PyPI), and the wheel carries the generated
protobuf code, its stubs, py.typed and the three console scripts."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cronraft import _native

REPO_ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("daemon", "raft", "client", "proto", "timerwheel")

_PROBE = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        out[name] = "imported"
    except ModuleNotFoundError as e:
        out[name] = "missing" if e.name == name else f"ModuleNotFoundError: {e}"
    sub = "cronraft." + name
    out[sub] = [str(p) for p in importlib.import_module(sub).__path__]
print(json.dumps(out))
"""


def test_only_the_cronraft_package_is_importable(tmp_path: Path) -> None:
    # -I: no cwd, PYTHONPATH or user site on sys.path; only what is installed in this interpreter.
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE, *FOLDERS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    for name in FOLDERS:
        assert found[name] == "missing", f"top-level `{name}` is importable: {found[name]}"
        paths = [Path(p).resolve() for p in found[f"cronraft.{name}"]]
        assert REPO_ROOT / name in paths, f"cronraft.{name} resolves to {paths}, not {REPO_ROOT / name}"


def _source_copy(dest: Path) -> None:
    """Copy what the build needs, so that build/ and *.egg-info land in tmp, never in the repository."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "setup.cfg", "setup.py", "README.md", "scripts/native.py"):
        if (REPO_ROOT / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, dest / name)
    shutil.copytree(REPO_ROOT / "cronraft", dest / "cronraft", symlinks=True, ignore=ignore)
    for name in FOLDERS:
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=ignore)


def _build_wheel(src: Path, out: Path, native: bool) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "CRONRAFT_NATIVE_WHEEL"}
    if native:
        env["CRONRAFT_NATIVE_WHEEL"] = "1"
    proc = subprocess.run(
        # --skip-dependency-check: setuptools>=70.1 builds wheels without the `wheel` package.
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--skip-dependency-check",
            "-o",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("cronraft-*.whl")
    return wheel


def test_wheel_contents(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _source_copy(src)
    wheel = _build_wheel(src, tmp_path / "dist", native=False)
    # Pure Python unless asked (setup.py): one wheel for every platform, no compiled core in it.
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (dist_info,) = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()

    strays = [n for n in names if not n.startswith(("cronraft/", f"{dist_info}/"))]
    assert not strays, f"files outside cronraft/ in the wheel: {strays}"
    assert dist_info.startswith("cronraft-")
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if "_native_build" in n or n.endswith(".so")]

    expected = {"cronraft/py.typed", "cronraft/errors.py", "cronraft/daemon/config/__init__.py"}
    # The dashboard's page, styles and scripts are package data (served from the installed package).
    expected |= {
        f"cronraft/daemon/dashboard/static/{p.name}"
        for p in (REPO_ROOT / "daemon/dashboard/static").iterdir()
    }
    for proto in sorted((REPO_ROOT / "proto" / "v1").glob("*.proto")):
        stem = f"cronraft/proto/v1/{proto.stem}"
        expected |= {
            f"{stem}.proto",
            f"{stem}_pb2.py",
            f"{stem}_pb2.pyi",
            f"{stem}_pb2_grpc.py",
            f"{stem}_pb2_grpc.pyi",
        }
    assert "cronraft/proto/v1/scheduler_pb2.py" in expected
    assert expected <= set(names), f"missing from the wheel: {sorted(expected - set(names))}"

    parser = configparser.ConfigParser()
    parser.read_string(entry_points)
    scripts = {k: v.replace(" ", "") for k, v in parser["console_scripts"].items()}
    assert scripts == {
        "schedd": "cronraft.daemon.main:main",
        "schedctl": "cronraft.client.cli:main",
        "schedworker": "cronraft.client.worker.cli:main",
    }


_STATUS = """
import sys
sys.path.insert(0, sys.argv[1])
from cronraft import _native
print(_native.__file__)
print(_native.status())
"""


@pytest.mark.skipif(not _native.status()[0], reason="needs a current native build (make native)")
def test_native_wheel(tmp_path: Path) -> None:
    """CRONRAFT_NATIVE_WHEEL=1 (the container image's build, setup.py): the wheel carries the native apply
    core, tagged for this interpreter and platform, and the installed files load it (their digest is the
    stamp's). The source copy holds the current build, so nothing is compiled here."""
    src = tmp_path / "src"
    src.mkdir()
    _source_copy(src)
    assert (src / "cronraft" / "_native_build" / "STAMP").exists()
    wheel = _build_wheel(src, tmp_path / "dist", native=True)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert f"-{tag}-{tag}-" in wheel.name and "-any.whl" not in wheel.name, wheel.name
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(unpacked)
    assert "cronraft/_native_build/STAMP" in names
    for module in _native.MODULES:
        parts = module.split(".")[1:]
        prefix = "cronraft/_native_build/" + "/".join(parts) + "."
        assert any(n.startswith(prefix) and n.endswith(".so") for n in names), f"{module} not compiled in"
    # -S: no site-packages (this checkout's editable install would answer first); _native needs none.
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _STATUS, str(unpacked)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != _native.ENV},
    )
    assert proc.returncode == 0, proc.stderr
    where, status = proc.stdout.splitlines()
    assert Path(where).is_relative_to(unpacked)
    assert status == "(True, 'built and current')"
