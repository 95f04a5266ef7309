"""Generate the synchronous client (client/sdk.py) from the asyncio one (client/aio.py), unasync-style.

Usage: python scripts/gen_sync_client.py [--check]
  --check  generate in memory and fail (exit 1) when the checked-in client/sdk.py differs.

The clients are written once, as coroutines (client/aio.py); the sync one is the same text with the
asyncio words replaced (httpcore does the same with unasync: https://github.com/encode/httpcore, its
scripts/unasync.py). Each rule must match at least once, so that a rule made useless by an edit of
aio.py is noticed. The output is formatted with ruff (isort and format), as `make format` would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "client" / "aio.py"
TARGET = ROOT / "client" / "sdk.py"

HEADER = '''"""The synchronous Cronraft client: one object, one gRPC channel per server address, thread-safe.

GENERATED from client/aio.py by scripts/gen_sync_client.py: edit client/aio.py, then run `make clients`
(`make check` fails when this file is stale). The methods, arguments, docstrings and behaviour are those
of `AsyncClient`, without `await`.

Writes (create, update, pause, resume, trigger, backfill, cancel, calendar changes, dead-letter redrive
and purge) go to the leader: a follower answers UNAVAILABLE with the leader's address in the
`cronraft-leader` trailing metadata, and the client retries there and remembers it. Every write carries a
`request_id` generated once per logical call and reused on each retry, so a retry after an unknown outcome
is safe (the cluster deduplicates). Reads go to any reachable node. UNAVAILABLE and DEADLINE_EXCEEDED are
retried over the configured servers with capped exponential backoff, within the client's `timeout_s`
(`_routing.CallPlan`).
"""'''

# (pattern, replacement), applied in order; plain strings unless compiled.
RULES: list[tuple[str | re.Pattern[str], str]] = [
    ("import asyncio\n", "import time\n"),
    ("await asyncio.sleep(", "time.sleep("),
    ("AsyncIterator", "Iterator"),
    (re.compile(r"Awaitable\[(\w+)\]"), r"\1"),
    ("Awaitable, ", ""),
    ("AsyncClient", "Client"),
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


def generate() -> str:
    text = SOURCE.read_text(encoding="utf-8")
    docstring = re.match(r'"""(?:.|\n)*?"""', text)
    if docstring is None:
        sys.exit(f"{SOURCE}: no module docstring")
    text = text[docstring.end() :]
    for pattern, replacement in RULES:
        if isinstance(pattern, re.Pattern):
            text, n = pattern.subn(replacement, text)
        else:
            n = text.count(pattern)
            text = text.replace(pattern, replacement)
        if n == 0:
            sys.exit(f"gen_sync_client: the rule {pattern!r} matched nothing in {SOURCE}")
    leftover = re.search(r"\b(async|await|asyncio|aio)\b", text)
    if leftover is not None:
        line = text[: leftover.start()].count("\n") + 1
        sys.exit(f"gen_sync_client: {leftover.group()!r} left at line {line} after the docstring")
    text = HEADER + text
    return _ruff(_ruff(text, "check", "--fix", "--select", "I", "--quiet"), "format")


def _ruff(text: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"ruff {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
    return done.stdout


def main() -> int:
    text = generate()
    if "--check" in sys.argv[1:]:
        if TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run `make clients`", file=sys.stderr)
            return 1
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
