"""Every `schedctl` and `schedworker` command the README, docs/*.md and the commands' own Examples show is
accepted by the real parsers (issue 19): the docs cannot drift from the flags. Nothing is run: each line
is parsed as `main` would parse it (`cli.parse_args`), and must print no deprecation warning.

Commands are taken from fenced code blocks (sh, bash, console, shell or no language); continuation
lines (`\\`) are joined, a trailing `# comment`, pipes and redirections are dropped, and placeholders
such as TASK_ID or `<id>` are parsed as the strings they are. A `text` block is a synopsis: every flag
it names must exist on its command and be no deprecated spelling.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cronraft.client import _argnames, cli, worker

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_BLOCKS = {"", "sh", "bash", "console", "shell"}
PROGRAMS = {"schedctl", "schedworker"}
_COMMENT = re.compile(r"\s+#(\s.*)?$")
_PLACEHOLDER = re.compile(r"<[A-Za-z_ -]+>")
_SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&", "2>", "2>&1"}
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Snippet:
    where: str  # file:line, or the command whose Examples hold it
    text: str  # one logical line, continuations joined


def _blocks(path: Path) -> Iterator[tuple[str, int, list[str]]]:
    """(info string, first line number, lines) of each fenced code block."""
    info: str | None = None
    start, lines = 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            if info is None:
                info, start, lines = line.strip().strip("`").strip(), number + 1, []
            else:
                yield info, start, lines
                info = None
        elif info is not None:
            lines.append(line)


def _logical_lines(lines: list[str], start: int) -> Iterator[tuple[int, str]]:
    """Lines with their `\\` continuations joined, comments dropped, a leading `$ ` prompt removed."""
    pending, first = "", start
    for number, line in enumerate(lines, start):
        text = _COMMENT.sub("", line).rstrip()
        if not pending:
            first = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        yield first, (pending + text).strip().removeprefix("$ ")
        pending = ""


def _program(words: list[str]) -> str | None:
    return Path(words[0]).name if words and Path(words[0]).name in PROGRAMS else None


def _words(text: str) -> list[str]:
    """The command's words, up to the first pipe or redirection."""
    lexer = shlex.shlex(_PLACEHOLDER.sub("x", text), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    out: list[str] = []
    for word in lexer:
        if word in _SHELL_OPERATORS:
            break
        out.append(word)
    return out


def documented_commands() -> list[Snippet]:
    out = []
    for path in DOCUMENTS:
        for info, start, lines in _blocks(path):
            if info not in COMMAND_BLOCKS:
                continue
            for number, text in _logical_lines(lines, start):
                if _program(_words(text)):
                    out.append(Snippet(f"{path.relative_to(ROOT)}:{number}", text))
    return out


def _leaves() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(path: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
        for action in subs:
            for name, sub in action.choices.items():
                yield from walk(f"{path} {name}".strip(), sub)

    yield from walk("", cli.build_parser())


def help_examples() -> list[Snippet]:
    out = []
    for path, parser in _leaves():
        epilog = parser.epilog or ""
        if "Examples:" not in epilog:
            continue
        lines = epilog.split("Examples:", 1)[1].splitlines()
        for _number, text in _logical_lines(lines, 1):
            if text:
                out.append(Snippet(f"schedctl {path} --help", text))
    return out


def parse(snippet: Snippet) -> argparse.Namespace:
    words = _words(snippet.text)
    if _program(words) == "schedworker":
        return worker.build_parser().parse_args(words[1:])
    return cli.parse_args(words[1:])


def test_the_docs_show_commands() -> None:
    """The extraction finds the README's first-hour path and the docs' examples (not vacuous)."""
    where = {s.where.split(":")[0] for s in documented_commands()}
    assert {"README.md", "docs/cli.md", "docs/payloads.md"} <= where
    assert len(documented_commands()) >= 30
    assert len(help_examples()) >= 40


@pytest.mark.parametrize("snippet", documented_commands() + help_examples(), ids=lambda s: s.where)
def test_every_shown_command_parses(snippet: Snippet, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        parse(snippet)
    except (cli.UsageError, SystemExit) as exc:
        pytest.fail(f"{snippet.where}: {snippet.text}\n  {exc}")
    err = capsys.readouterr().err
    assert "deprecated" not in err, f"{snippet.where} uses an old spelling: {err}"


# ------------------------------------------------------------------------------------------- synopsis


def synopsis_entries() -> list[Snippet]:
    """The entries of the `text` blocks: a `schedctl ...` line with its indented continuation lines."""
    out: list[Snippet] = []
    for path in DOCUMENTS:
        for info, start, lines in _blocks(path):
            if info != "text":
                continue
            for number, line in enumerate(lines, start):
                if line.startswith("schedctl "):
                    out.append(Snippet(f"{path.relative_to(ROOT)}:{number}", line))
                elif line.startswith(" ") and out:
                    out[-1] = Snippet(out[-1].where, f"{out[-1].text}\n{line}")
    return out


def _command_of(text: str) -> tuple[str, argparse.ArgumentParser]:
    parser: argparse.ArgumentParser = cli.build_parser()
    path = []
    for word in text.split()[1:]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
        path.append(word)
    return " ".join(path), parser


def test_the_synopsis_is_found() -> None:
    assert len(synopsis_entries()) >= 25


@pytest.mark.parametrize("entry", synopsis_entries(), ids=lambda s: s.where)
def test_the_synopsis_names_current_flags_only(entry: Snippet) -> None:
    path, parser = _command_of(entry.text)
    current = {
        option
        for action in parser._actions
        if not isinstance(action, _argnames.DeprecatedAlias)
        for option in action.option_strings
    }
    old = {
        option
        for action in parser._actions
        if isinstance(action, _argnames.DeprecatedAlias)
        for option in action.option_strings
    }
    for flag in _FLAG.findall(entry.text):
        assert flag not in old, f"{entry.where}: {flag} is a deprecated spelling on `{path}`"
        assert flag in current, f"{entry.where}: `schedctl {path}` has no {flag}"
