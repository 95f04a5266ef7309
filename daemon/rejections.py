"""The one mapping from a command's recorded rejection (raft.rejection) to the error tree, hence to a gRPC
status (each error class names its status code; daemon.services.common._abort sets it).

| code | error | status |
|---|---|---|
| invalid_argument | InvalidArgument(field, problem) | INVALID_ARGUMENT |
| not_found | NotFound | NOT_FOUND |
| resource_exhausted (a quota) | ResourceExhausted | RESOURCE_EXHAUSTED |
| internal (a handler failed: nothing applied) | InternalError | INTERNAL |
| any other (invalid_state, in_use, stale_token...) | FailedPrecondition | FAILED_PRECONDITION |

The message is the recorded text; `where` (e.g. "batches[3]" of a bulk import) is put in front of it, and
in front of the field of an invalid argument.
"""

from __future__ import annotations

from cronraft import errors
from cronraft.proto.v1 import commands_pb2
from cronraft.raft.rejection import Code, Rejection

_INTERNAL = "the command failed when applied and changed nothing: "


def error_for(rejection: Rejection, where: str = "") -> errors.CronraftError:
    """The error a client gets for a command refused with `rejection`."""
    if rejection.code == Code.INVALID_ARGUMENT:
        field = ".".join(part for part in (where, rejection.field) if part) or "request"
        return errors.InvalidArgument(field, rejection.problem if rejection.field else rejection.message)
    if rejection.code == Code.NOT_FOUND:
        return errors.NotFound(_placed(where, rejection.message))
    if rejection.code == Code.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(_placed(where, rejection.message))
    if rejection.code == Code.INTERNAL:
        # INTERNAL, not INVALID_ARGUMENT: nothing says the request was wrong (raft.state).
        return errors.InternalError(_placed(where, _INTERNAL + rejection.message))
    return errors.FailedPrecondition(_placed(where, rejection.message))


def _placed(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def check_result(res: commands_pb2.CommandResult, where: str = "") -> None:
    """Raise the error of a command that was not applied."""
    if res.applied:
        return
    rejection = Rejection.of_result(res)
    if rejection is not None:
        raise error_for(rejection, where)


__all__ = ["check_result", "error_for"]
