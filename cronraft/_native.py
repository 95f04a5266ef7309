"""The native apply core: the state machine's modules compiled to C by mypyc, used when built and current.

Applying a log entry is the CPU every node spends on every execution (issue 16): in CPython the apply of
one recurring execution costs ~145 us on our machines, two thirds of it the interpreter walking the
commands' Python. The same modules compiled by mypyc (from the type-annotated source, unchanged) apply the
same entries in ~100 us. The source stays the one truth: the compiled modules are a build of it, and the
pure-Python modules are what runs wherever they are not built.

How it is wired, and why this way:
- `scripts/native.py build` (run by `make install` and `make native`) compiles `MODULES` into
  `cronraft/_native_build/` (never committed), with a stamp holding the digest of their sources.
- `raft/__init__.py` and `raft/commands/__init__.py` call `extend_path(__path__, ...)`: when the build is
  current it puts its folder first on the package's path, so `import cronraft.raft.state` loads the
  compiled module; otherwise nothing changes. No module imports the build by name.
- "current" means the stamp's digest equals the digest of the sources now on disk (and the interpreter's
  ABI tag): a source edited after the build runs as Python until the next build, never as stale C. The
  digest reads the compiled sources once per process (~3 ms).
- `CRONRAFT_NATIVE=0` runs pure Python whatever is built (a debugger, a test that patches a module's
  function, an A/B run); `CRONRAFT_NATIVE=1` makes a missing or stale build an error at import, so a
  benchmark or CI run cannot measure the slow path by mistake.

Both forms apply every entry alike: the compiled modules are the same code, and the CI runs the unit and
simulation suites in both. A compiled module checks its functions' argument types at call time (Python
does not): an annotation that lies raises TypeError there, which the suites would show.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ENV = "CRONRAFT_NATIVE"
BUILD_DIR = Path(__file__).resolve().parent / "_native_build"
STAMP = BUILD_DIR / "STAMP"
# The compiled modules' shared library (mypyc's group): inside the package, so nothing new is importable
# at the top level.
GROUP = "cronraft.raft._native"

# The hot path of apply. Not compiled: package __init__ modules (they load first, and hold the path),
# interfaces that other code subclasses or patches (raft.kv's MemKV, raft.replicator's protocols), and the
# adapters around pysyncobj, threads and files (their time is in I/O and in pysyncobj, not in Python).
MODULES: tuple[str, ...] = (
    "cronraft.raft.answers",
    "cronraft.raft.calendar",
    "cronraft.raft.codec",
    "cronraft.raft.cron",
    "cronraft.raft.deps",
    "cronraft.raft.features",
    "cronraft.raft.fireplan",
    "cronraft.raft.firing",
    "cronraft.raft.misfire",
    "cronraft.raft.output",
    "cronraft.raft.overlap",
    "cronraft.raft.quota",
    "cronraft.raft.records",
    "cronraft.raft.result_bytes",
    "cronraft.raft.retention",
    "cronraft.raft.retry",
    "cronraft.raft.schedule",
    "cronraft.raft.state",
    "cronraft.raft.stats",
    "cronraft.raft.stats_counts",
    "cronraft.raft.stats_hist",
    "cronraft.raft.store",
    "cronraft.raft.validate",
    "cronraft.raft.versions",
    "cronraft.raft.commands.calendars",
    "cronraft.raft.commands.context",
    "cronraft.raft.commands.dead_letters",
    "cronraft.raft.commands.executions",
    "cronraft.raft.commands.features",
    "cronraft.raft.commands.fires",
    "cronraft.raft.commands.leadership",
    "cronraft.raft.commands.leases",
    "cronraft.raft.commands.membership",
    "cronraft.raft.commands.output_chunks",
    "cronraft.raft.commands.pruning",
    "cronraft.raft.commands.tasks",
    # The leader's pure core: its loop's per-execution work (offers, leases, results, pending, the pick).
    "cronraft.daemon.leader.core",
    "cronraft.daemon.leader.granting",
    "cronraft.daemon.leader.leases",
    "cronraft.daemon.leader.messages",
    "cronraft.daemon.leader.outcomes",
    "cronraft.daemon.leader.output_admission",
    "cronraft.daemon.leader.pending",
    "cronraft.daemon.leader.planner",
    "cronraft.daemon.leader.plans",
    "cronraft.daemon.leader.retries",
    "cronraft.daemon.leader.settings",
    "cronraft.daemon.leader.staging",
    "cronraft.daemon.leader.workers",
    # The leader's loop around the core: its runner, the worker streams' messages, the metrics it keeps.
    "cronraft.daemon.leader_runner",
    "cronraft.daemon.metrics",
    "cronraft.daemon.worker_session",
)

_PACKAGE_ROOT = Path(__file__).resolve().parent


def source_file(module: str) -> Path:
    """The .py file of one of `MODULES` (through the package's own folder links)."""
    parts = module.split(".")[1:]
    return _PACKAGE_ROOT.joinpath(*parts[:-1], parts[-1] + ".py")


def source_digest() -> str:
    """The digest the build's stamp must hold: the interpreter's ABI and every compiled module's source."""
    h = hashlib.sha256()
    h.update(sys.implementation.cache_tag.encode())
    for module in MODULES:
        h.update(module.encode() + b"\0")
        h.update(source_file(module).read_bytes())
    return h.hexdigest()


def _decide() -> tuple[bool, str]:
    wanted = os.environ.get(ENV, "")
    if wanted == "0":
        return False, f"{ENV}=0"
    try:
        stamp = STAMP.read_text().strip()
    except FileNotFoundError:
        reason = "not built (make native)"
    else:
        if stamp == source_digest():
            return True, "built and current"
        reason = "built from other sources (make native)"
    if wanted == "1":
        raise ImportError(f"{ENV}=1 but the native apply core is {reason}")
    return False, reason


_status: tuple[bool, str] | None = None


def status() -> tuple[bool, str]:
    """(in use, why): decided once per process."""
    global _status
    if _status is None:
        _status = _decide()
    return _status


def extend_path(package_path: list[str], package: str) -> None:
    """Put the build's folder for `package` first on its `__path__` when the build is in use."""
    on, _ = status()
    if on:
        package_path.insert(0, str(BUILD_DIR.joinpath(*package.split(".")[1:])))


def in_use() -> bool:
    """Whether the state machine runs compiled, checked on a module rather than trusted from the path."""
    from cronraft.raft import state

    return not state.__file__.endswith(".py") if state.__file__ else False


def describe() -> str:
    """One line for a daemon's start-up log."""
    on, why = status()
    return f"native apply core: {'on' if on and in_use() else 'off'} ({why})"
