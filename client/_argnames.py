"""The naming scheme of the `schedctl` and `schedworker` flags (docs/cli.md, "Naming scheme", issue 19),
and the argparse pieces that keep it: deprecated aliases, KEY=VALUE values, the help formatter.

The scheme, which tests/unit/test_cli_flags_and_help.py checks over every parser:
- a removal is `--clear-X` (`--clear-tag KEY`, `--clear-retry`, ...); `--no-X` is only the negative of
  a yes/no flag `--X`;
- every retry setting is `--retry-*`, the attempt count included (`--retry-attempts`);
- a key/value is `KEY=VALUE` (a header also takes `KEY:VALUE`, the form of HTTP itself);
- a time bound says what it bounds (`--exec-timeout`, `--rpc-timeout`); a cap on results is `--limit`;
- an old spelling stays as a hidden alias that does the same and prints one `warning:` line on stderr.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from cronraft.errors import InvalidArgument

__all__ = [
    "GLOBAL",
    "KEY_VALUE",
    "DeprecatedAlias",
    "HelpFormatter",
    "add_alias",
    "key_value",
    "mark_global",
    "split_pair",
]

KEY_VALUE = "KEY=VALUE"
# Help lines wider than this are hard to read, whatever the terminal; usage lines stay under 120.
_MAX_HELP_WIDTH = 100


class DeprecatedAlias(argparse.Action):
    """An old spelling of the flag `target`: it does what `target` does (same dest, type and values),
    after printing `warning: OLD is deprecated; use NEW` on stderr. Hidden from help and usage."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, target: argparse.Action) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=target.nargs,
            const=target.const,
            default=argparse.SUPPRESS,  # the target's default stands
            choices=target.choices,
            metavar=target.metavar,
            help=argparse.SUPPRESS,
        )
        self.type = target.type  # after __init__: typeshed's __init__ takes no registered type name
        self.target = target

    @property
    def replacement(self) -> str:
        return self.target.option_strings[0]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"warning: {option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        self.target(parser, namespace, values, self.replacement)


def add_alias(container: Any, old: str, target: argparse.Action) -> argparse.Action:
    """Keep `old` working as a deprecated spelling of `target`. `container` is the parser or group that
    holds `target`, so that a mutually exclusive group also excludes the old spelling."""
    action: argparse.Action = container.add_argument(
        old, action=DeprecatedAlias, dest=target.dest, target=target
    )
    return action


def split_pair(text: str, separators: str = "=") -> tuple[str, str] | None:
    """`KEY=VALUE` as (KEY, VALUE), split at the first of `separators`; None without one or a key.
    Keys are stripped (a header `Accept: text/plain` has a space after its colon), values too."""
    cut = min((i for i in (text.find(s) for s in separators) if i >= 0), default=-1)
    if cut <= 0 or not text[:cut].strip():
        return None
    return text[:cut].strip(), text[cut + 1 :].strip()


def key_value(flag: str, separators: str = "=") -> Callable[[str], str]:
    """The argparse `type` of a KEY=VALUE flag: the text as given, or `InvalidArgument` naming `flag`
    at parse time. argparse lets that error through (it catches only ValueError and TypeError), so
    the command line fails with the same `error: FLAG: ...` and exit code 2 as every other bad value.
    `separators` "=:" also takes a header's KEY:VALUE."""
    forms = " or ".join(f"KEY{s}VALUE" for s in separators)

    def check(text: str) -> str:
        if split_pair(text, separators) is None:
            raise InvalidArgument(flag, f"expected {forms}, got {text!r}")
        return text

    return check


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs wrapped paragraph by paragraph, except paragraphs with indented lines
    (the Examples), kept as written; the width is the terminal's, at most 100 columns. A subcommand's
    usage leaves out the global options (`GLOBAL` actions): its help lists them in their own group."""

    def __init__(self, prog: str) -> None:
        width = min(shutil.get_terminal_size().columns, _MAX_HELP_WIDTH) - 2
        super().__init__(prog, max_help_position=30, width=width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = textwrap.dedent(text).strip("\n").split("\n\n")
        out = []
        for paragraph in paragraphs:
            if any(line.startswith(" ") for line in paragraph.splitlines()):
                out.append(textwrap.indent(paragraph, indent))
            else:
                words = " ".join(paragraph.split())
                out.append(textwrap.fill(words, width, initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(out)

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any = None) -> None:
        shown = [a for a in actions if not getattr(a, GLOBAL, False)]
        super().add_usage(usage, shown, groups, prefix)


# The attribute that marks a global option repeated on a subcommand (see HelpFormatter.add_usage).
GLOBAL = "cronraft_global_option"


def mark_global(action: argparse.Action) -> argparse.Action:
    setattr(action, GLOBAL, True)
    return action
