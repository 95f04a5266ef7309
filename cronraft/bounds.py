"""Bounds on what clients and workers send that are not part of a task spec or a calendar (issue 11).

Every field a client or a worker can send has a bound. The bounds of a task spec live with its
validation (`cronraft.raft.validate`, `raft.calendar`, `raft.deps`, `raft.schedule`), checked by the
leader before it proposes and again by the state machine when it applies; the bounds here are those of
requests (ids, tokens, filters, lists of ids) and of the worker stream, checked by the servicers before
anything is proposed. A request over a bound is refused with INVALID_ARGUMENT naming the field and the
bound, and nothing is changed. docs/guarantees.md ("Bounds and quotas") lists them all with their
defaults. This module imports nothing of the project, so that every layer (the client and the worker
too) can use it.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------- requests

MAX_REQUEST_ID = 128  # characters of a request id (the idempotency key)
MAX_PAGE_TOKEN = 64  # characters of a page token (ids are 26; ListExecutions' are up to 20 digits)
MAX_PAGE_SIZE = 1_000  # page_size / limit of a list call (0: the default; more is lowered to this)
# A page stops early, with a next_page_token, once its items reach this many bytes (at least one item).
MAX_PAGE_BYTES = 4 << 20
MAX_NAME_PREFIX = 200  # ListTasks.name_prefix (a task name is at most 200 characters)
MAX_FILTER_TAGS = 64  # ListTasks.tags pairs (a task holds at most 64 tags)
MAX_TAG_LEN = 256  # characters of a tag key or value (as in a spec)
MAX_NOTE = 1_000  # PauseTask.note
MAX_REASON = 1_000  # CancelExecution.reason
MAX_REDRIVE_IDS = 1_000  # RedriveDeadLetters.execution_ids (and its limit)
MAX_PURGE_IDS = 10_000  # PurgeDeadLetters.execution_ids (and its limit)
MAX_CALENDAR_NAME = 64  # characters of a calendar name (GetCalendar, DeleteCalendar, a task's calendars)
MAX_NODE_ID = 64  # ClockRequest.node_id (cluster member ids are at most 63 characters)
# Namespaces (docs/security.md, "Namespaces"): a DNS-label-like name; empty means the default one, which
# is stored empty (so that data from before namespaces reads as `default` and hashes the same).
MAX_NAMESPACE = 63
NAMESPACE_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
DEFAULT_NAMESPACE = "default"

# ---------------------------------------------------------------------------------- worker stream

MAX_WORKER_ID = 128  # Hello.worker_id: 1..128 printable characters
MAX_WORKER_CAPACITY = 100_000  # Hello.capacity
MAX_WORKER_QUEUES = 64  # Hello.queues (each a queue name as in a spec)
MAX_WORKER_LABELS = 64  # Hello.labels pairs (keys and values at most MAX_TAG_LEN characters)
MAX_INCARNATION = 128  # Hello.incarnation
MAX_HELLO_DIRECT = 64  # Hello.direct: addresses, each at most MAX_ADDRESS characters
MAX_ADDRESS = 512
MAX_HEARTBEAT_LEASES = 100_000  # Heartbeat.leases, and Heartbeat.finished (each)
MAX_RESULTS_PER_MESSAGE = 10_000  # Results.results (a worker sends at most 1,000)
MAX_OUTPUT_CHUNK_BYTES = 1 << 20  # OutputChunk.data (a worker sends at most 256 KiB)
# Live output a node reads from one worker stream: past this rate (after a burst) it stops reading the
# stream for a while, and gRPC's flow control makes the sender wait. Receiving is what costs the node:
# a stream pushing 1 MiB chunks as fast as it could (S12) took the leader's CPU from its Raft thread
# until it lost leadership. A worker sends at most the log's 1 MiB per attempt and stream, in chunks of at
# most 256 KiB, as fast as the stream takes them (its payloads wait: client/worker/live_output.py), and
# output is replicated through the log, so more than this would swamp the cluster anyway.
MAX_OUTPUT_BYTES_PER_S = 8 << 20
MAX_OUTPUT_BURST_BYTES = 16 << 20
# And at most this much from all of a leader's worker streams together, each stream sending output getting
# an equal share while they ask for more (daemon.leader.output_admission, "The read budget"): with the
# per-stream budget alone, N streams were read at N times what the log carries.
MAX_NODE_OUTPUT_BYTES_PER_S = 8 << 20
MAX_NODE_OUTPUT_BURST_BYTES = 16 << 20
# AttemptResult fields are cut, not refused (a result is the record of a run: never dropped). The state
# machine keeps the same: the last 64 KiB of each tail, the first 64 KiB of a return value, 4,096
# characters of an error.
MAX_RESULT_TAIL_BYTES = 64 * 1024
MAX_RETURN_VALUE_BYTES = 64 * 1024
MAX_RESULT_ERROR = 4_096
# An attempt's result ($CRONRAFT_RESULT_FILE) is never cut: past the cluster's `[limits] max_result_bytes`
# (1 MiB by default) the worker fails the attempt saying so, and the state machine refuses the same. The
# key may not exceed MAX_RESULT_BYTES: a Complete carrying the result, its tails and its return value must
# fit one Raft entry (4 MiB, raft.groupcommit) and a worker's message (SERVER_MAX_RECEIVE_BYTES).
DEFAULT_RESULT_BYTES = 1 << 20
MAX_RESULT_BYTES = 3 << 20

# -------------------------------------------------------------------------------------------- gRPC

# The largest message a node accepts. A task spec is at most 4 MiB of payload (scheduler.
# max_payload_bytes, 64 KiB by default) and an import batch 3 MiB; a worker's result message 1 MiB.
SERVER_MAX_RECEIVE_BYTES = 8 << 20
# The largest message the SDK, schedctl and schedworker accept: one task or execution (up to about
# 4.5 MiB) always fits; pages and lease offers are cut well below it (MAX_PAGE_BYTES, MAX_OFFER_BYTES).
CLIENT_MAX_RECEIVE_BYTES = 64 << 20
# Lease offers to one worker are split into messages of at most this many bytes (at least one lease).
MAX_OFFER_BYTES = 4 << 20
# Concurrent HTTP/2 streams on one connection (worker streams and calls): more wait for a free one.
MAX_CONCURRENT_STREAMS = 1_000

__all__ = [
    "CLIENT_MAX_RECEIVE_BYTES",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RESULT_BYTES",
    "MAX_ADDRESS",
    "MAX_CALENDAR_NAME",
    "MAX_CONCURRENT_STREAMS",
    "MAX_FILTER_TAGS",
    "MAX_HEARTBEAT_LEASES",
    "MAX_HELLO_DIRECT",
    "MAX_INCARNATION",
    "MAX_NAMESPACE",
    "MAX_NAME_PREFIX",
    "MAX_NODE_ID",
    "MAX_NODE_OUTPUT_BURST_BYTES",
    "MAX_NODE_OUTPUT_BYTES_PER_S",
    "MAX_NOTE",
    "MAX_OFFER_BYTES",
    "MAX_OUTPUT_BURST_BYTES",
    "MAX_OUTPUT_BYTES_PER_S",
    "MAX_OUTPUT_CHUNK_BYTES",
    "MAX_PAGE_BYTES",
    "MAX_PAGE_SIZE",
    "MAX_PAGE_TOKEN",
    "MAX_PURGE_IDS",
    "MAX_REASON",
    "MAX_REDRIVE_IDS",
    "MAX_REQUEST_ID",
    "MAX_RESULTS_PER_MESSAGE",
    "MAX_RESULT_BYTES",
    "MAX_RESULT_ERROR",
    "MAX_RESULT_TAIL_BYTES",
    "MAX_RETURN_VALUE_BYTES",
    "MAX_TAG_LEN",
    "MAX_WORKER_CAPACITY",
    "MAX_WORKER_ID",
    "MAX_WORKER_LABELS",
    "MAX_WORKER_QUEUES",
    "NAMESPACE_PATTERN",
    "SERVER_MAX_RECEIVE_BYTES",
]
