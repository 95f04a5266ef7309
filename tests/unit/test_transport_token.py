"""Where a client's bearer token comes from: --token, $CRONRAFT_TOKEN, the file $CRONRAFT_TOKEN_FILE names
(client._transport), and that a notifier command never inherits schedd's CRONRAFT_* variables."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cronraft.client._transport import Transport, add_transport_arguments, transport_from_args
from cronraft.daemon.notify import notifier_environment
from cronraft.errors import InvalidArgument


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_transport_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_token_flag_wins_then_the_variable_then_the_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert transport_from_args(_args("--token", "flag"), {"CRONRAFT_TOKEN_FILE": str(f)}).token == "flag"
    assert (
        transport_from_args(_args(), {"CRONRAFT_TOKEN": "env", "CRONRAFT_TOKEN_FILE": str(f)}).token == "env"
    )
    assert transport_from_args(_args(), {"CRONRAFT_TOKEN_FILE": str(f)}).token == "from-file"
    assert Transport.from_env({"CRONRAFT_TOKEN_FILE": str(f)}).token == "from-file"
    assert transport_from_args(_args(), {}).token is None


def test_a_bad_token_file_is_refused_naming_the_flag_or_variable(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"CRONRAFT_TOKEN_FILE.*cannot read"):
        transport_from_args(_args(), {"CRONRAFT_TOKEN_FILE": str(tmp_path / "absent")})
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(InvalidArgument, match=r"CRONRAFT_TOKEN_FILE.*is empty"):
        transport_from_args(_args(), {"CRONRAFT_TOKEN_FILE": str(empty)})
    spaced = tmp_path / "spaced"
    spaced.write_text("two words")
    with pytest.raises(InvalidArgument, match=r"CRONRAFT_TOKEN_FILE.*without spaces"):
        Transport.from_env({"CRONRAFT_TOKEN_FILE": str(spaced)})
    big = tmp_path / "big"
    big.write_text("x" * 10_000)
    with pytest.raises(InvalidArgument, match=r"CRONRAFT_TOKEN_FILE.*longer than"):
        transport_from_args(_args(), {"CRONRAFT_TOKEN_FILE": str(big)})


def test_a_notifier_command_inherits_no_cronraft_variable() -> None:
    env = {"PATH": "/usr/bin", "CRONRAFT_CLUSTER_SECRET": "s" * 20, "CRONRAFT_TOKEN": "t", "LANG": "C"}
    assert notifier_environment(env) == {"PATH": "/usr/bin", "LANG": "C"}
