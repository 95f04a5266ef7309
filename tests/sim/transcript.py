"""Transcript tests: a scripted history of events and the exact decisions expected, in a text file (the
style of etcd-raft's testdata/*.txt and Temporal's scheduler tests).

A transcript is a sequence of commands, one per line starting with `> `, each followed by the lines it
must print (none: it prints nothing). Lines starting with `#` and blank lines are comments. A command is
a verb, positional words and `key=value` words:

    # a task that may not fire ahead waits for its due time
    > tick now=2500
    fire a 500 ms ahead
    b waits on the on-time wheel until 3000

`run(path, driver)` feeds every command to `driver(cmd)` and compares what it returns with the expected
lines; on a mismatch the failure shows the whole transcript as it ran. With CRONRAFT_REWRITE=1 the
file is rewritten with what the driver printed (review the diff before committing it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REWRITE_ENV = "CRONRAFT_REWRITE"


@dataclass
class Cmd:
    verb: str
    words: list[str] = field(default_factory=list)
    kv: dict[str, str] = field(default_factory=dict)
    line: int = 0

    def num(self, key: str, default: int | None = None) -> int:
        if key in self.kv:
            return int(self.kv[key].replace("_", ""))
        if default is None:
            raise KeyError(f"line {self.line}: {self.verb} needs {key}=")
        return default

    def text(self, key: str, default: str = "") -> str:
        return self.kv.get(key, default)

    def items(self, key: str) -> list[str]:
        value = self.kv.get(key, "")
        return [v for v in value.split(",") if v]


def parse_cmd(text: str, line: int) -> Cmd:
    verb, *rest = text.split()
    cmd = Cmd(verb, line=line)
    for word in rest:
        key, eq, value = word.partition("=")
        if eq:
            cmd.kv[key] = value
        else:
            cmd.words.append(word)
    return cmd


@dataclass
class _Block:
    head: list[str]  # comments and blank lines before the command, kept on rewrite
    command: str
    line: int
    expected: list[str]


def _parse(text: str) -> tuple[list[_Block], list[str]]:
    blocks: list[_Block] = []
    pending: list[str] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if raw.startswith("> "):
            blocks.append(_Block(pending, raw[2:].strip(), n, []))
            pending = []
        elif not raw.strip() or raw.startswith("#"):
            pending.append(raw)
        elif blocks and not pending:
            blocks[-1].expected.append(raw)
        else:
            raise ValueError(f"{n}: expected output must follow its command directly: {raw!r}")
    return blocks, pending


def run(path: Path, driver: Callable[[Cmd], list[str]]) -> None:
    blocks, tail = _parse(path.read_text())
    report: list[str] = []
    out: list[str] = []
    failed = False
    for block in blocks:
        got = driver(parse_cmd(block.command, block.line))
        out += [*block.head, f"> {block.command}", *got]
        report += [*block.head, f"> {block.command}"]
        if got == block.expected:
            report += got
        else:
            failed = True
            report += [f"  expected: {e}" for e in block.expected] or ["  expected nothing"]
            report += [f"  got:      {g}" for g in got] or ["  got nothing"]
    if os.environ.get(REWRITE_ENV) == "1":
        path.write_text("\n".join([*out, *tail]) + "\n")
        return
    assert not failed, f"{path.name} differs (as it ran):\n" + "\n".join(report)
