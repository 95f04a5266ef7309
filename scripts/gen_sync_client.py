"""Generate the synchronous client from the asyncio one, unasync-style: one sync module per async module.

Usage: python scripts/gen_sync_client.py [--check]
  --check  generate in memory and fail (exit 1) when a checked-in sync module differs, is missing, or
           is left over from an async module that is gone.

The clients are written once, as coroutines; the sync one is the same text with the asyncio words
replaced (httpcore does the same with unasync: https://github.com/encode/httpcore, its
scripts/unasync.py). The pairs, all under client/:

  aio.py             -> sdk.py               `AsyncClient` -> `Client`: constructor, routing, close
  _aio_<subject>.py  -> _sync_<subject>.py   a subject's mixin: `Async<Subject>Calls` -> `<Subject>Calls`

Each `_aio_*.py` found is generated; nothing here lists them. Each rule must match at least once over
all the sources, so that a rule made useless by an edit is noticed, and no asyncio word may be left in
the output. The output is formatted with ruff (isort and format), as `make format` would.

A new call goes in the `_aio_*` module of its subject, then `make clients`. A module that would grow
past ~500 lines is split, as is a new subject (say, "stats"):
  1. write client/_aio_stats.py: a module docstring whose first paragraph names the subject and
     `AsyncClient` (it becomes the sync twin's, rewritten by the rules, so it may name no other
     asyncio word; the other paragraphs, which speak of the async module, are dropped), and one class
     `AsyncStatsCalls(AsyncClientBase)` (from `_aio_base`; subclass another subject's mixin instead if
     its calls use that subject's, as `AsyncBulkCalls(AsyncTaskCalls)` does);
  2. add `AsyncStatsCalls` to the bases of `AsyncClient` in client/aio.py;
  3. run `make clients`: it writes client/_sync_stats.py (`StatsCalls`) and the new sdk.py, whose
     `Client` has the new base; `git add` both files.
What a call may use of the client (`namespace`, `timeout_s`, `_invoke`, `_bulk`, ...) is declared in
`_aio_base.AsyncClientBase`; a new need is declared there, and defined in aio.py if it is per client.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client"
CLIENT_SOURCE = CLIENT / "aio.py"
CLIENT_TARGET = CLIENT / "sdk.py"

HEADER = '''"""The synchronous Cronraft client: one object, one gRPC channel per server address, thread-safe.

GENERATED from client/aio.py by scripts/gen_sync_client.py: edit client/aio.py, then run `make clients`
(`make check` fails when this file is stale). The methods, arguments, docstrings and behaviour are those
of `AsyncClient`, without `await`. Its calls are in the generated `_sync_*` modules, one per subject, as
those of `AsyncClient` are in the `_aio_*` modules.

Writes (create, update, pause, resume, trigger, backfill, cancel, calendar changes, dead-letter redrive
and purge) go to the leader: a follower answers UNAVAILABLE with the leader's address in the
`cronraft-leader` trailing metadata, and the client retries there and remembers it. Every write carries a
`request_id` generated once per logical call and reused on each retry, so a retry after an unknown outcome
is safe (the cluster deduplicates). Reads go to any reachable node. UNAVAILABLE and DEADLINE_EXCEEDED are
retried over the configured servers with capped exponential backoff, within the client's `timeout_s`
(`_routing.CallPlan`).
"""'''

# The second paragraph of a subject module's docstring (its first is the async one's, rewritten).
GENERATED = """GENERATED from client/{source} by scripts/gen_sync_client.py: edit that file,
then run `make clients` (`make check` fails when this file is stale)."""
PLACEHOLDER = "@@GENERATED@@"

# (pattern, replacement), applied in order to every source; plain strings unless compiled.
RULES: list[tuple[str | re.Pattern[str], str]] = [
    ("import asyncio\n", "import time\n"),
    ("await asyncio.sleep(", "time.sleep("),
    ("AsyncIterator", "Iterator"),
    (re.compile(r"Awaitable\[(\w+)\]"), r"\1"),
    ("Awaitable, ", ""),
    ("AsyncClient", "Client"),  # and AsyncClientBase -> ClientBase
    (re.compile(r"\bAsync(\w+Calls)\b"), r"\1"),  # the subject mixins
    ("_aio_", "_sync_"),  # the imports of one module by another, and the comments naming them
    ("An asyncio client of a Cronraft cluster.", "A synchronous client of a Cronraft cluster."),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
    ("async def ", "def "),
    ("async for ", "for "),
    ("async with", "with"),
    ("await ", ""),
    ("aio_channel(", "channel("),
    # An async generator cannot `yield from`; the sync one should (ruff UP028).
    (re.compile(r"^( +)for (\w+) in (\w+):\n\1    yield \2\n", re.M), r"\1yield from \3\n"),
]
LEFTOVER = re.compile(r"\b(async|await|asyncio|aio|Async\w*)\b")


def pairs() -> list[tuple[Path, Path]]:
    """(async source, sync target) of every generated module: aio.py first, then each `_aio_*.py`."""
    subjects = sorted(CLIENT.glob("_aio_*.py"))
    return [(CLIENT_SOURCE, CLIENT_TARGET)] + [
        (source, CLIENT / source.name.replace("_aio_", "_sync_", 1)) for source in subjects
    ]


def generate() -> dict[Path, str]:
    """The text of every sync module, by path."""
    matched = dict.fromkeys(range(len(RULES)), 0)
    out: dict[Path, str] = {}
    for source, target in pairs():
        text = source.read_text(encoding="utf-8")
        docstring = re.match(r'"""((?:.|\n)*?)"""', text)
        if docstring is None:
            sys.exit(f"{source.relative_to(ROOT)}: no module docstring")
        if source == CLIENT_SOURCE:  # sdk.py has its own docstring (HEADER), written for it
            text = text[docstring.end() :]
        else:  # the first paragraph is rewritten like the code; the rest speaks of the async module
            summary = docstring.group(1).split("\n\n")[0].rstrip()
            text = f'"""{summary}\n\n{PLACEHOLDER}\n"""' + text[docstring.end() :]
        for i, (pattern, replacement) in enumerate(RULES):
            if isinstance(pattern, re.Pattern):
                text, n = pattern.subn(replacement, text)
            else:
                n = text.count(pattern)
                text = text.replace(pattern, replacement)
            matched[i] += n
        leftover = LEFTOVER.search(text)
        if leftover is not None:
            line = text[: leftover.start()].count("\n") + 1
            sys.exit(
                f"gen_sync_client: {leftover.group()!r} left at line {line} of the sync "
                f"{source.relative_to(ROOT)} (after its docstring, for aio.py)"
            )
        if source == CLIENT_SOURCE:
            text = HEADER + text
        else:
            text = text.replace(PLACEHOLDER, GENERATED.format(source=source.name))
        text = _ruff(text, target, "check", "--fix", "--select", "I", "--quiet")
        out[target] = _ruff(text, target, "format")
    for i, n in matched.items():
        if n == 0:
            sys.exit(f"gen_sync_client: the rule {RULES[i][0]!r} matched nothing in the async client")
    return out


def orphans(generated: dict[Path, str]) -> list[Path]:
    """Generated sync modules whose async source is gone (a `_sync_*.py` not generated is left alone)."""
    return [
        path
        for path in sorted(CLIENT.glob("_sync_*.py"))
        if path not in generated and "GENERATED from client/_aio_" in path.read_text(encoding="utf-8")
    ]


def _same(path: Path, text: str) -> bool:
    return path.exists() and path.read_text(encoding="utf-8") == text


def _ruff(text: str, target: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(target), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"ruff {' '.join(args)} failed on {target.relative_to(ROOT)}:\n{done.stderr}{done.stdout}")
    return done.stdout


def main() -> int:
    generated = generate()
    left = orphans(generated)
    if "--check" in sys.argv[1:]:
        stale = [p for p, text in generated.items() if not _same(p, text)]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale or missing: run `make clients`", file=sys.stderr)
        for path in left:
            print(f"{path.relative_to(ROOT)} has no async source: run `make clients`", file=sys.stderr)
        if stale or left:
            return 1
        print(f"the sync client is up to date ({len(generated)} modules)")
        return 0
    for path, text in generated.items():
        if not _same(path, text):
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    for path in left:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)} (its async source is gone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
