"""Retry decisions and the dead-letter queue, applied inside `apply()` (pure, deterministic).

A failed attempt (non-zero exit, timeout, start error) is retried only when its task has a retry policy,
up to `max_attempts` attempts, after an exponential backoff with a deterministic jitter (a hash of the
execution id and attempt, so every node computes the same instant). An execution that exhausts its
attempts, or hits a non-retryable exit code, ends in its final state and, for tasks with a retry
policy, is put in the dead-letter queue with its reason and output tails.
"""

from __future__ import annotations

import hashlib

from cronraft.proto.v1 import common_pb2
from cronraft.raft.codec import id_bytes
from cronraft.raft.kv import Txn

DEFAULT_INITIAL_BACKOFF_MS = 1_000
DEFAULT_MULTIPLIER = 2.0
DEFAULT_MAX_BACKOFF_MS = 5 * 60_000
# Backoff is spread by up to this fraction (down), so that retries of many executions do not align.
JITTER_FRACTION = 0.2


def attempts_allowed(task: common_pb2.Task, ex: common_pb2.Execution, default: int) -> int:
    per_run = task.spec.max_attempts or default
    return per_run * (ex.redrives + 1)


def retry_reason(
    task: common_pb2.Task, ex: common_pb2.Execution, outcome: int, exit_code: int, default_attempts: int
) -> str:
    """'' when the attempt is retried; else why it is final (for the execution and the dead letter)."""
    if not task.spec.HasField("retry"):
        return "no retry policy"
    if ex.guarantee == common_pb2.AT_MOST_ONCE:
        return "at_most_once executions are never run twice"
    policy = task.spec.retry
    allowed = attempts_allowed(task, ex, default_attempts)
    if ex.attempt >= allowed:
        return f"attempt {ex.attempt} of {allowed} failed"
    if outcome == common_pb2.ATTEMPT_TIMED_OUT:
        return "timed out (no_retry_on_timeout)" if policy.no_retry_on_timeout else ""
    if exit_code in policy.non_retryable_exit_codes:
        return f"exit code {exit_code} is not retryable"
    if policy.retryable_exit_codes and exit_code not in policy.retryable_exit_codes:
        return f"exit code {exit_code} is not among the retryable ones"
    return ""


def backoff_ms(policy: common_pb2.RetryPolicy, execution_id: str, attempt: int) -> int:
    """Delay before attempt `attempt + 1`: initial * multiplier^(attempt-1), capped, minus a jitter."""
    initial = policy.initial_backoff_ms or DEFAULT_INITIAL_BACKOFF_MS
    mult = policy.multiplier or DEFAULT_MULTIPLIER
    cap = policy.max_backoff_ms or DEFAULT_MAX_BACKOFF_MS
    base = min(float(cap), initial * mult ** max(0, attempt - 1))
    digest = hashlib.blake2b(f"{execution_id}:{attempt}".encode(), digest_size=8).digest()
    spread = int.from_bytes(digest, "big") / 2**64  # [0, 1)
    return max(1, int(base * (1 - JITTER_FRACTION * spread)))


def put_dead_letter(txn: Txn, letter: common_pb2.DeadLetter) -> None:
    exec16 = id_bytes(letter.execution_id)
    txn.put("dlq", exec16, letter.SerializeToString(deterministic=True))
    txn.put("dlq_by_task", id_bytes(letter.task_id) + exec16, b"")


def take_dead_letter(txn: Txn, execution_id: str) -> common_pb2.DeadLetter | None:
    exec16 = id_bytes(execution_id, field="execution_ids")
    raw = txn.get("dlq", exec16)
    if raw is None:
        return None
    letter = common_pb2.DeadLetter()
    letter.ParseFromString(raw)
    txn.delete("dlq", exec16)
    txn.delete("dlq_by_task", id_bytes(letter.task_id) + exec16)
    return letter


def dead_letter_ids(txn: Txn, task_id: str, limit: int) -> list[str]:
    """Execution ids in the queue, of one task (or of every task when `task_id` is empty), oldest id first."""
    from cronraft.raft.codec import id_text

    out = []
    if task_id:
        task16 = id_bytes(task_id, field="task_id")
        for k, _ in txn.scan("dlq_by_task", task16, task16 + b"\xff" * 17):
            out.append(id_text(k[16:32]))
            if len(out) >= limit:
                break
    else:
        for k, _ in txn.scan("dlq"):
            out.append(id_text(k))
            if len(out) >= limit:
                break
    return out


def list_dead_letters(
    txn: Txn, task_id: str, page_size: int, page_token: str
) -> tuple[list[common_pb2.DeadLetter], str]:
    from cronraft.raft.codec import id_text

    after = id_bytes(page_token, field="page_token") if page_token else b""
    out: list[common_pb2.DeadLetter] = []
    if task_id:
        task16 = id_bytes(task_id, field="task_id")
        keys = (
            k[16:32]
            for k, _ in txn.scan(
                "dlq_by_task", task16 + after + (b"\0" if after else b""), task16 + b"\xff" * 17
            )
        )
    else:
        keys = (k for k, _ in txn.scan("dlq", after + b"\0" if after else b""))
    last = b""
    for exec16 in keys:
        raw = txn.get("dlq", exec16)
        if raw is None:
            continue
        letter = common_pb2.DeadLetter()
        letter.ParseFromString(raw)
        out.append(letter)
        last = exec16
        if len(out) >= page_size:
            break
    return out, (id_text(last) if len(out) >= page_size and last else "")


__all__ = [
    "attempts_allowed",
    "backoff_ms",
    "dead_letter_ids",
    "list_dead_letters",
    "put_dead_letter",
    "retry_reason",
    "take_dead_letter",
]
