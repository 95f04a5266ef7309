"""Why the state machine answered a command without applying it: one typed `Rejection`, its codes.

A handler refuses a command by raising `Rejected(code, problem, field=...)`; `raft.state` records the
rejection in the command's `CommandResult` (`applied=False`, `error_code`, `error`) and the daemon turns
it into an error of the one error tree (daemon/rejections.py), hence a gRPC status.

The recorded text is part of the replicated state: results are kept in the dedup table (a retried request
is answered from it, possibly by a node of another version) and feed the state digest. So the codes below
and the text `message` makes (`field: problem`, or `problem` alone) must never change; only how the code
represents them may. The field is written into the text, not into a field of its own, for that reason,
and `Rejection.of_result` reads it back for `invalid_argument`, the one code whose text starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cronraft.errors import CronraftError, InvalidArgument
from cronraft.proto.v1 import commands_pb2


class Code(StrEnum):
    """Every `CommandResult.error_code` this version records (the stored strings: never rename one)."""

    # Refusals: the command is well-formed but does not apply to the current state.
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    INVALID_ARGUMENT = "invalid_argument"  # the text starts with the field: "spec.schedule.at: ..."
    INVALID_STATE = "invalid_state"
    VERSION_MISMATCH = "version_mismatch"
    IN_USE = "in_use"
    RUNNING = "running"  # DeleteTask without force while an execution runs
    RESOURCE_EXHAUSTED = "resource_exhausted"  # a quota (raft.quota)
    # Leader duties that arrive too early, too late or twice (the leader retries or drops them).
    NOT_DUE = "not_due"
    ALREADY_FIRED = "already_fired"
    NO_EPOCH = "no_epoch"
    STALE_EPOCH = "stale_epoch"
    STALE_TOKEN = "stale_token"
    BACKOFF = "backoff"
    DEPENDENCIES_UNMET = "dependencies_unmet"
    CONCURRENCY_LIMIT = "concurrency_limit"
    # Recorded by raft.state itself, not raised by a handler.
    UNKNOWN_COMMAND = "unknown_command"
    CODEC = "codec"  # the entry did not decode
    INTERNAL = "internal"  # a handler raised something unexpected (state.internal_error)
    # Answers of commands that did apply (`applied` stays true for skipped_overlap).
    SKIPPED_OVERLAP = "skipped_overlap"  # TriggerTask: the overlap policy skipped the run
    REFUSED = "refused"  # AppendOutput: a chunk for a lease that is not current (no text)


@dataclass(frozen=True)
class Rejection:
    """A code, the problem in words, and the request field it is about ("" when none).

    `code` is a `Code` when made by this version; one read back from a stored result may be a code of a
    newer version (`of_result` keeps it as the string it is)."""

    code: str
    problem: str
    field: str = ""

    @property
    def message(self) -> str:
        """The recorded text (`CommandResult.error`)."""
        return f"{self.field}: {self.problem}" if self.field else self.problem

    def result(self) -> commands_pb2.CommandResult:
        """The recorded outcome of a command refused with this rejection."""
        return commands_pb2.CommandResult(applied=False, error_code=str(self.code), error=self.message)

    @classmethod
    def of_result(cls, res: commands_pb2.CommandResult) -> Rejection | None:
        """The rejection a recorded result carries (None: none). The field is recovered for
        `invalid_argument` only: other codes' texts do not start with one."""
        if not res.error_code and res.applied:
            return None
        code = res.error_code
        if code == Code.INVALID_ARGUMENT:
            field, _, problem = res.error.partition(": ")
            if problem:
                return cls(code, problem, field)
        return cls(code, res.error)


class Rejected(CronraftError):
    """Raised by a handler to refuse a command (answered with `rejection`, not applied). Handlers check
    everything that can refuse before they write (raft.commands)."""

    def __init__(self, code: Code, problem: str, *, field: str = "") -> None:
        self.rejection = Rejection(code, problem, field)
        super().__init__(self.rejection.message)

    @property
    def code(self) -> str:
        """The code as a plain string (as recorded, and as audit events write it)."""
        return str(self.rejection.code)


class QuotaExceeded(Rejected):
    """A command would go past a quota (raft.quota); the message names the limit and says how to raise it.

    Here, not in raft.quota: that module is compiled (cronraft/_native.py), and a compiled subclass of
    an interpreted class does not override its class attributes: `grpc_code` read INTERNAL there."""

    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str) -> None:
        super().__init__(Code.RESOURCE_EXHAUSTED, message)


def invalid_argument(e: InvalidArgument) -> Rejection:
    """The rejection of an `errors.InvalidArgument` raised while applying (its text, `str(e)`, kept)."""
    if e.field and str(e) == f"{e.field}: {e.problem}":
        return Rejection(Code.INVALID_ARGUMENT, e.problem, e.field)
    return Rejection(Code.INVALID_ARGUMENT, str(e))


__all__ = ["Code", "QuotaExceeded", "Rejected", "Rejection", "invalid_argument"]
