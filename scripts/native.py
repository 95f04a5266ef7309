"""Build, check or remove the native apply core (cronraft/_native.py says what it is and how it loads).

    python scripts/native.py build [--required]   compile cronraft._native.MODULES with mypyc (needs gcc and
                                                  the Python headers; ~2 min on 2 cores); skipped when the
                                                  build is already current
    python scripts/native.py status               whether a process started now would use it, and why
    python scripts/native.py clean                remove it (pure Python from then on)

A failed build leaves no stamp, so nothing half-built is ever loaded; without --required it exits 0 with
a message (the project runs as pure Python), with --required it exits 1 (CI, benchmarks).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cronraft import _native  # noqa: E402  (the repository's own package, before the installed one)


def build(required: bool) -> int:
    digest = _native.source_digest()
    if _native.STAMP.exists() and _native.STAMP.read_text().strip() == digest:
        print("native apply core: current, nothing to build")
        return 0
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution
    except ImportError as exc:
        return _failed(required, f"mypyc or setuptools missing ({exc}); `make install` installs them")
    if shutil.which(os.environ.get("CC", "gcc")) is None and shutil.which("cc") is None:
        return _failed(required, "no C compiler (gcc) on PATH")
    shutil.rmtree(_native.BUILD_DIR, ignore_errors=True)
    sources = [str(_native.source_file(m).relative_to(ROOT)) for m in _native.MODULES]
    # mypyc names modules after their paths from the current folder: cronraft/raft/state.py is
    # cronraft.raft.state, the name every importer uses.
    os.chdir(ROOT)
    print(f"native apply core: compiling {len(sources)} modules with mypyc (about a minute)", flush=True)
    with tempfile.TemporaryDirectory(prefix="cronraft-native-") as tmp, _quiet(Path(tmp) / "log") as log:
        try:
            extensions = mypycify(
                sources,
                opt_level="3",
                multi_file=True,  # a C file per module: the two cores compile in parallel
                group_name=_native.GROUP,
                target_dir=str(Path(tmp) / "c"),
            )
            # mypyc writes the group's headers under its dotted path but compiles the multi-file modules'
            # C from the target's root: show the compiler both.
            headers = str(Path(tmp, "c", *_native.GROUP.split(".")[:-1]))
            for ext in extensions:
                ext.include_dirs.append(headers)
            dist = Distribution({"name": "cronraft-native", "ext_modules": extensions})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib = str(Path(tmp) / "lib")  # lib/cronraft/raft/state...so, then moved below
            cmd.build_temp = str(Path(tmp) / "o")
            cmd.parallel = os.cpu_count() or 1
            dist.run_command("build_ext")
        except (Exception, SystemExit) as exc:  # mypy's and the compiler's errors end up here
            shutil.rmtree(_native.BUILD_DIR, ignore_errors=True)
            log.restore()
            print(log.tail(), file=sys.stderr)
            return _failed(required, f"build failed: {exc}")
        # The build's folders mirror the package's (raft/, raft/commands/): extend_path puts them first.
        shutil.copytree(Path(tmp) / "lib" / "cronraft", _native.BUILD_DIR)
    _native.STAMP.write_text(digest + "\n")
    print(f"native apply core: built {len(sources)} modules into {_native.BUILD_DIR.relative_to(ROOT)}")
    return 0


class _Output:
    """The build's output (mypyc's warnings, every compiler command line: ~150 lines) sent to a file, the
    process's own file descriptors included (the compiler's subprocesses write there): shown on failure."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: list[int] = []

    def redirect(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    def restore(self) -> None:
        if self._saved:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self._saved = []

    def tail(self, lines: int = 40) -> str:
        text = self.path.read_text(errors="replace").splitlines()
        return "\n".join(line for line in text[-lines:] if "Treating generator comprehension" not in line)


@contextlib.contextmanager
def _quiet(path: Path) -> Iterator[_Output]:
    out = _Output(path)
    out.redirect()
    try:
        yield out
    finally:
        out.restore()


def _failed(required: bool, why: str) -> int:
    print(f"native apply core: {why}", file=sys.stderr)
    if required:
        return 1
    print("native apply core: not built; Cronraft runs as pure Python (slower apply)", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["build", "status", "clean"])
    parser.add_argument("--required", action="store_true", help="exit 1 when the build cannot be made")
    args = parser.parse_args()
    if args.action == "build":
        return build(args.required)
    if args.action == "clean":
        shutil.rmtree(_native.BUILD_DIR, ignore_errors=True)
        print("native apply core: removed")
        return 0
    on, why = _native.status()
    print(f"native apply core: {'would be used' if on else 'not used'} ({why})")
    return 0 if on else 1


if __name__ == "__main__":
    sys.exit(main())
