"""One naming scheme over every flag of schedctl and schedworker, and help a newcomer can use (issue 19;
docs/cli.md, "Naming scheme"). The checks walk the real argparse trees, so a flag added later is held to
the same rules: no current flag is `--timeout`, removals are `--clear-X`, retry settings `--retry-*`,
key/values `KEY=VALUE`, each old spelling still works (same dest, same value) with one warning line.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from cronraft.client import _argnames, cli, worker
from cronraft.errors import InvalidArgument

# What each command needs besides the flag under test, so that its command line parses.
BASE_ARGS = {
    "task create": ["--name", "x", "--every", "1m"],
    "task update": ["t1"],
    "task backfill": ["t1", "--from", "now", "--to", "now"],
    "task preview": ["t1"],
    "schedule preview": ["--every", "1m"],
    "task list": [],
    "cluster status": [],
}
GLOBAL_OPTIONS = ("--server", "--output", "--rpc-timeout")
OLD_REMOVAL_PREFIXES = ("--remove-", "--reset-", "--unset-", "--delete-", "--drop-")
MAX_USAGE_LINE = 120
# Commands added by the security work (tls init, token create) without an Examples section yet.
NO_EXAMPLES_YET: frozenset[str] = frozenset()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def schedctl_commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the schedctl tree with its command path ("" for the top level)."""

    def walk(path: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield path, parser
        for name, sub in _subparsers(parser).items():
            yield from walk(f"{path} {name}".strip(), sub)

    yield from walk("", cli.build_parser())


def leaf_commands() -> list[tuple[str, argparse.ArgumentParser]]:
    return [(path, p) for path, p in schedctl_commands() if path and not _subparsers(p)]


def every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    return [*schedctl_commands(), ("schedworker", worker.build_parser())]


def current_options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if not isinstance(action, _argnames.DeprecatedAlias):
            for option in action.option_strings:
                yield option, action


def aliases() -> list[tuple[str, _argnames.DeprecatedAlias]]:
    return [
        (path, action)
        for path, parser in every_parser()
        for action in parser._actions
        if isinstance(action, _argnames.DeprecatedAlias)
    ]


def base_args(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """A command line that `parser` accepts: BASE_ARGS, else a value for each positional and each
    required option (the first of its choices, or "x")."""
    if path in BASE_ARGS:
        return BASE_ARGS[path]
    out: list[str] = []
    for action in parser._actions:
        value = str(next(iter(action.choices))) if action.choices else "x"
        if not action.option_strings and action.nargs not in ("*", "?", argparse.PARSER):
            out.append(value)
        elif action.option_strings and action.required:
            out += [action.option_strings[0], value]
    return out


def parse(path: str, *argv: str) -> argparse.Namespace:
    if path == "schedworker":
        return worker.build_parser().parse_args(list(argv))
    return cli.parse_args([*path.split(), *argv])


# ------------------------------------------------------------------------------------------ naming


@pytest.mark.parametrize(("path", "parser"), every_parser(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_current_flag_is_the_ambiguous_timeout(path: str, parser: argparse.ArgumentParser) -> None:
    assert "--timeout" not in dict(current_options(parser)), path


@pytest.mark.parametrize(("path", "parser"), every_parser(), ids=lambda v: v if isinstance(v, str) else "")
def test_removals_are_clear_flags(path: str, parser: argparse.ArgumentParser) -> None:
    for option, action in current_options(parser):
        assert not option.startswith(OLD_REMOVAL_PREFIXES), f"{path} {option}: a removal is --clear-X"
        if option.startswith("--no-"):  # only the negative of a yes/no flag
            assert isinstance(action, argparse.BooleanOptionalAction), f"{path} {option}"
            assert f"--{option.removeprefix('--no-')}" in action.option_strings


def test_task_update_has_every_removal() -> None:
    update = dict(schedctl_commands())["task update"]
    options = dict(current_options(update))
    for flag in (
        "--clear-tag",
        "--clear-calendars",
        "--clear-start-at",
        "--clear-end-at",
        "--clear-retry",
        "--clear-notify",
        "--clear-worker-label",
        "--clear-retention",
    ):
        assert flag in options


@pytest.mark.parametrize(("path", "parser"), every_parser(), ids=lambda v: v if isinstance(v, str) else "")
def test_retry_settings_are_retry_flags(path: str, parser: argparse.ArgumentParser) -> None:
    for option, action in current_options(parser):
        if any(word in option for word in ("retry", "attempts", "backoff")):  # not `logs --attempt N`
            negative = option.startswith("--no-retry-") and isinstance(action, argparse.BooleanOptionalAction)
            assert option.startswith("--retry-") or option == "--clear-retry" or negative, (
                f"{path} {option}: retry settings are --retry-*"
            )
        if action.dest == "max_attempts":
            assert option == "--retry-attempts"


def test_start_and_end_clear_keep_the_none_value() -> None:
    both = parse("task update", "t1", "--clear-start-at", "--clear-end-at")
    assert (both.start_at, both.end_at) == ("none", "none")
    assert parse("task update", "t1", "--start-at", "none").start_at == "none"
    with pytest.raises(cli.UsageError, match="not allowed with"):
        parse("task update", "t1", "--start-at", "+1h", "--clear-start-at")


# --------------------------------------------------------------------------------- deprecated aliases


def _sample(action: argparse.Action) -> list[str]:
    if action.nargs == 0:
        return []
    return ["k=3"] if action.metavar == _argnames.KEY_VALUE else ["3"]


@pytest.mark.parametrize(
    ("path", "alias"), aliases(), ids=lambda v: v if isinstance(v, str) else v.option_strings[0]
)
def test_each_old_spelling_does_the_same_with_one_warning(
    path: str, alias: _argnames.DeprecatedAlias, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = alias.option_strings[0], alias.replacement
    assert alias.dest == alias.target.dest
    base = base_args(path, dict(every_parser())[path])
    place = [] if path in ("", "schedworker") else base  # a top-level alias goes before the command
    command = ["cluster", "status"] if path == "" else []
    value = _sample(alias)
    expected = parse(path, *place, new, *value, *command)
    assert capsys.readouterr().err == ""
    got = parse(path, *place, old, *value, *command)
    assert capsys.readouterr().err == f"warning: {old} is deprecated; use {new}\n"
    assert getattr(got, alias.dest) == getattr(expected, alias.dest)


def test_the_old_timeouts_keep_their_meanings(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("", "--timeout", "7s", "task", "create", "--name", "x", "--every", "1m", "--timeout", "5m")
    assert (args.rpc_timeout, args.task_timeout) == ("7s", "5m")
    assert parse("task list", "--timeout", "3s").rpc_timeout == "3s"
    args = parse("task update", "t1", "--rpc-timeout", "2s", "--exec-timeout", "1m")
    assert (args.rpc_timeout, args.task_timeout) == ("2s", "1m")
    assert parse("task list").rpc_timeout == "10s"
    capsys.readouterr()


def test_the_old_spellings_are_many() -> None:
    """The walk finds the aliases of issue 19 (so the test above is not vacuous)."""
    found = {(path, a.option_strings[0]) for path, a in aliases()}
    for expected in [
        ("", "--timeout"),
        ("task create", "--timeout"),
        ("task create", "--max-attempts"),
        ("task create", "--retry-max"),
        ("task create", "--no-retry-on-exit"),
        ("task update", "--remove-tag"),
        ("task update", "--no-calendar"),
        ("task update", "--no-notify"),
        ("task update", "--reset-retry"),
        ("task update", "--remove-worker-label"),
        ("task update", "--reset-retention"),
        ("task backfill", "--max"),
        ("task preview", "--count"),
        ("schedule preview", "--count"),
        ("schedworker", "--label"),
    ]:
        assert expected in found


# ----------------------------------------------------------------------------------------- key/value


def key_value_flags() -> list[tuple[str, str]]:
    return [
        (path, option)
        for path, parser in every_parser()
        for option, action in current_options(parser)
        if action.metavar == _argnames.KEY_VALUE
    ]


def test_key_value_flags_are_found_on_task_and_worker() -> None:
    flags = set(key_value_flags())
    assert {
        ("task create", "--tag"),
        ("task create", "--worker-label"),
        ("task create", "--http-header"),
    } <= flags
    assert ("schedworker", "--worker-label") in flags  # the same label flag on both sides
    assert ("task list", "--tag") in flags


@pytest.mark.parametrize("path_option", key_value_flags(), ids=" ".join)
def test_every_key_value_flag_takes_key_equals_value(path_option: tuple[str, str]) -> None:
    path, option = path_option
    base = base_args(path, dict(every_parser())[path])
    parse(path, *base, option, "team=ops")
    if path == "schedworker":
        with pytest.raises(SystemExit):  # schedworker's own argparse error, exit 2
            parse(path, *base, option, "team")
    else:
        with pytest.raises(InvalidArgument) as err:
            parse(path, *base, option, "team")
        assert err.value.field == option and "KEY=VALUE" in err.value.problem


def test_no_flag_spells_a_pair_otherwise() -> None:
    for path, parser in every_parser():
        for option, action in current_options(parser):
            metavar = str(action.metavar or "")
            assert metavar not in ("K=V", "KEY:VALUE", "K:V"), f"{path} {option}: write KEY=VALUE"


def test_a_header_is_key_value_or_key_colon_value() -> None:
    assert _argnames.split_pair("Authorization: Bearer a=b", "=:") == ("Authorization", "Bearer a=b")
    assert _argnames.split_pair("Authorization=Bearer a:b", "=:") == ("Authorization", "Bearer a:b")
    assert _argnames.split_pair("team:ops") is None  # a tag is KEY=VALUE only
    parse("task create", *BASE_ARGS["task create"], "--http-url", "http://h", "--http-header", "A: 1")
    with pytest.raises(InvalidArgument, match="KEY=VALUE or KEY:VALUE"):
        parse("task create", *BASE_ARGS["task create"], "--http-header", "nothing")


def test_worker_labels_from_either_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse("schedworker", "--worker-label", "zone=eu").labels == [("zone", "eu")]
    assert parse("schedworker", "--label", "zone=eu").labels == [("zone", "eu")]
    assert "--label is deprecated; use --worker-label" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- help


def _takes_input(parser: argparse.ArgumentParser) -> bool:
    return any(
        not isinstance(a, argparse._HelpAction | _argnames.DeprecatedAlias)
        and not getattr(a, _argnames.GLOBAL, False)
        and a.help is not argparse.SUPPRESS
        and a.dest not in ("output",)
        for a in parser._actions
    )


@pytest.mark.parametrize("columns", ["80", "200"])
@pytest.mark.parametrize(("path", "parser"), leaf_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_subcommand_help_lists_the_global_options_and_examples(
    path: str, parser: argparse.ArgumentParser, columns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    text = parser.format_help()
    shared = ("--output",) if path == "schedule preview" else GLOBAL_OPTIONS  # offline: no server
    for option in shared:
        assert option in text, f"{path}: {option} missing from its help"
    assert cli.GLOBAL_OPTIONS_TITLE in text
    if _takes_input(parser) and path not in NO_EXAMPLES_YET:
        assert "\nExamples:\n" in text, f"{path}: no Examples section"
    for line in parser.format_usage().splitlines():
        assert len(line) <= MAX_USAGE_LINE, f"{path}: usage line of {len(line)} characters"


@pytest.mark.parametrize("columns", ["80", "200"])
def test_top_level_usage_is_short(columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    for line in cli.build_parser().format_usage().splitlines():
        assert len(line) <= MAX_USAGE_LINE


@pytest.mark.parametrize("path", ["task create", "task update"])
def test_create_and_update_help_is_grouped(path: str) -> None:
    text = dict(schedctl_commands())[path].format_help()
    for title in ("schedule", "payload", "run policy", "retries", "notifications", "placement", "retention"):
        assert f"\n{title}" in text, f"{path}: no {title!r} group"
    assert "--timeout" not in text and "--max-attempts" not in text  # old spellings stay hidden


def test_global_options_work_before_and_after_the_command() -> None:
    before = parse("", "--server", "h:1", "-o", "json", "--rpc-timeout", "3s", "task", "list")
    after = parse("task list", "--server", "h:1", "-o", "json", "--rpc-timeout", "3s")
    for args in (before, after):
        assert (args.server, args.output, args.rpc_timeout) == ("h:1", "json", "3s")
    assert parse("schedule preview", "--every", "1m", "-o", "json").output == "json"
