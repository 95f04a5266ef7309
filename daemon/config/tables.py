"""The tunables' tables, one parser each: [raft], [storage], [retention], [scheduler], [log], [clock],
[limits], [http] (and [metrics], its deprecated alias). Each checks its keys' ranges and the relations
between them."""

from __future__ import annotations

from cronraft.bounds import MAX_RESULT_BYTES
from cronraft.daemon.config.addresses import split_host_port
from cronraft.daemon.config.model import (
    LOG_FORMATS,
    LOG_LEVELS,
    ClockConfig,
    HttpConfig,
    LimitsConfig,
    LogConfig,
    RaftConfig,
    RetentionConfig,
    SchedulerConfig,
    StorageConfig,
)
from cronraft.daemon.config.reader import _describe, _Table
from cronraft.raft.firing import MAX_FIRE_LEAD_MS

# The ordinary fire lead's bound; only burst staging (stage_lead_ms) goes further, up to MAX_FIRE_LEAD_MS.
MAX_STEADY_LEAD_MS = 5_000

# gRPC's default maximum message size; a payload must fit in one request and one Raft entry.
MAX_PAYLOAD_LIMIT = 4 * 1024 * 1024


def _raft(t: _Table) -> RaftConfig:
    d = RaftConfig()
    election = t.integer(
        "election_timeout_ms", d.election_timeout_ms, 200, why="shorter timeouts cause spurious elections"
    )
    heartbeat = t.integer("heartbeat_ms", d.heartbeat_ms, 1)
    if heartbeat * 2 >= election:
        raise t.error(
            "heartbeat_ms",
            f"{heartbeat} must be less than half of raft.election_timeout_ms ({election}), or followers "
            f"start elections between heartbeats; lower it to at most {(election - 1) // 2}",
        )
    return RaftConfig(
        election_timeout_ms=election,
        heartbeat_ms=heartbeat,
        snapshot_min_entries=t.integer("snapshot_min_entries", d.snapshot_min_entries, 1),
        snapshot_min_time_s=t.integer("snapshot_min_time_s", d.snapshot_min_time_s, 1),
        snapshot_max_bytes=t.integer(
            "snapshot_max_bytes",
            d.snapshot_max_bytes,
            1 << 20,
            2 << 30,
            why="pysyncobj's journal cannot exceed 4 GiB, and each snapshot copies the whole store",
        ),
    )


def _storage(t: _Table) -> StorageConfig:
    d = StorageConfig()
    map_size = t.integer("map_size_bytes", d.map_size_bytes, 1 << 20)
    largest = t.integer("max_map_size_bytes", max(d.max_map_size_bytes, map_size), 1 << 20)
    if largest < map_size:
        raise t.error(
            "max_map_size_bytes",
            f"{largest} is below storage.map_size_bytes ({map_size}): the map only grows; raise it to at "
            f"least {map_size} or lower storage.map_size_bytes",
        )
    reserve = t.integer("reserve_bytes", d.reserve_bytes, 1 << 20)
    if reserve * 2 > largest:
        raise t.error(
            "reserve_bytes",
            f"{reserve} is more than half of storage.max_map_size_bytes ({largest}): little would be left "
            f"for data; lower it to at most {largest // 2}",
        )
    return StorageConfig(map_size_bytes=map_size, max_map_size_bytes=largest, reserve_bytes=reserve)


def _retention(t: _Table) -> RetentionConfig:
    d = RetentionConfig()
    return RetentionConfig(
        keep_executions=t.integer("keep_executions", d.keep_executions, 0, why="0 keeps every execution"),
        execution_max_age_s=t.integer("execution_max_age_s", d.execution_max_age_s, 0),
        ended_task_max_age_s=t.integer("ended_task_max_age_s", d.ended_task_max_age_s, 0),
        log_max_age_s=t.integer("log_max_age_s", d.log_max_age_s, 0),
        audit_max_age_s=t.integer("audit_max_age_s", d.audit_max_age_s, 0),
        audit_max_records=t.integer("audit_max_records", d.audit_max_records, 0),
        prune_interval_ms=t.integer(
            "prune_interval_ms", d.prune_interval_ms, 10, why="each step is one Raft entry"
        ),
        prune_max_deletes=t.integer(
            "prune_max_deletes", d.prune_max_deletes, 1, 10_000, why="one step is one apply on every node"
        ),
        prune_max_visits=t.integer(
            "prune_max_visits", d.prune_max_visits, 1, 100_000, why="one step is one apply on every node"
        ),
    )


def _scheduler(t: _Table) -> SchedulerConfig:
    d = SchedulerConfig()
    ttl = t.integer("lease_ttl_ms", d.lease_ttl_ms, 100)
    heartbeat = t.integer("heartbeat_interval_ms", d.heartbeat_interval_ms, 1)
    if heartbeat * 2 >= ttl:
        raise t.error(
            "heartbeat_interval_ms",
            f"{heartbeat} must be less than half of scheduler.lease_ttl_ms ({ttl}), so that a worker "
            f"renews at least twice before its lease expires; lower it to at most {(ttl - 1) // 2} "
            "or raise scheduler.lease_ttl_ms",
        )
    horizon = t.integer("horizon_ms", d.horizon_ms, 100)
    if t.has("stage_lead_ms"):
        stage_lead = t.integer(
            "stage_lead_ms",
            d.stage_lead_ms,
            0,
            MAX_FIRE_LEAD_MS,
            why="a change to a task no longer affects a fire committed ahead",
        )
        if stage_lead > horizon // 2:
            raise t.error(
                "stage_lead_ms",
                f"{stage_lead} must be at most half of scheduler.horizon_ms ({horizon}): the leader sees a "
                f"burst only once the horizon has loaded it; lower it to at most {horizon // 2} or raise "
                "scheduler.horizon_ms",
            )
    else:  # the default follows a shorter horizon
        stage_lead = min(d.stage_lead_ms, horizon // 2)
    return SchedulerConfig(
        horizon_ms=horizon,
        lease_ttl_ms=ttl,
        heartbeat_interval_ms=heartbeat,
        default_timeout_ms=t.integer("default_timeout_ms", d.default_timeout_ms, 1),
        max_payload_bytes=t.integer(
            "max_payload_bytes",
            d.max_payload_bytes,
            1,
            MAX_PAYLOAD_LIMIT,
            why="a payload must fit in one gRPC message and one Raft entry; pass large inputs by reference",
        ),
        max_attempts=t.integer("max_attempts", d.max_attempts, 1),
        max_running=t.integer("max_running", d.max_running, 0),
        aging_step_ms=t.integer("aging_step_ms", d.aging_step_ms, 1),
        fire_lead_ms=t.integer(
            "fire_lead_ms",
            d.fire_lead_ms,
            0,
            MAX_STEADY_LEAD_MS,
            why="a change to a task no longer affects a fire committed ahead; keep the lead short",
        ),
        stage_lead_ms=stage_lead,
        stage_rate=t.integer("stage_rate", d.stage_rate, 1),
    )


def _log(t: _Table) -> LogConfig:
    d = LogConfig()
    return LogConfig(
        level=t.choice("level", LOG_LEVELS, d.level),
        format=t.choice("format", LOG_FORMATS, d.format),
    )


def _clock(t: _Table) -> ClockConfig:
    d = ClockConfig()
    return ClockConfig(
        probe_interval_ms=t.integer(
            "probe_interval_ms",
            d.probe_interval_ms,
            50,
            60_000,
            why="each probe is one gRPC call per peer; a slow probe detects a skewed clock late",
        ),
        max_offset_ms=t.integer(
            "max_offset_ms",
            d.max_offset_ms,
            100,
            why="below 100 ms network noise on the probes could make a healthy leader step down",
        ),
    )


def _limits(t: _Table) -> LimitsConfig:
    d = LimitsConfig()
    return LimitsConfig(
        max_tasks=t.integer("max_tasks", d.max_tasks, 1),
        max_calendars=t.integer("max_calendars", d.max_calendars, 1),
        max_pending_per_task=t.integer("max_pending_per_task", d.max_pending_per_task, 1),
        max_executions_per_task=t.integer("max_executions_per_task", d.max_executions_per_task, 1),
        max_concurrent_rpcs=t.integer(
            "max_concurrent_rpcs",
            d.max_concurrent_rpcs,
            100,
            why="every connected worker holds one call (its stream), and clients need room too",
        ),
        max_result_bytes=t.integer(
            "max_result_bytes",
            d.max_result_bytes,
            1,
            MAX_RESULT_BYTES,
            why="a result travels in one Raft entry with its attempt's output tails",
        ),
    )


def _address(t: _Table) -> str | None:
    """The table's `address` (host:port, or "" for none); None when the key is absent."""
    if not t.has("address"):
        return None
    address = t.data["address"]
    if not isinstance(address, str):
        raise t.error("address", f"expected a string host:port, got {_describe(address)}")
    if address:
        try:
            split_host_port(address)
        except ValueError as e:
            raise t.error("address", f"{address!r}: {e}") from None
    return address


def _http(http: _Table, metrics: _Table, deprecations: list[str]) -> HttpConfig:
    """[http] address, or the deprecated [metrics] address (the endpoint it named now serves all of the
    listener's routes) when [http] has none."""
    address, old = _address(http), _address(metrics)
    if old is not None:
        if address is not None:
            raise metrics.error(
                "address", "deprecated, and http.address is set too: remove the [metrics] table"
            )
        deprecations.append(
            f"{metrics.source}: metrics.address is deprecated: write [http] address = {old!r} instead "
            "(the same listener now serves /metrics, /healthz, /readyz and the dashboard)"
        )
        address = old
    return HttpConfig(address=address or "")
