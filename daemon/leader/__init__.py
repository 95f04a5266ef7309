"""Leader duties as pure, event-driven components composed by `LeaderCore` (docs/architecture.md, "The
leader"):

- `planner.FirePlanner`: the horizon loaded into the timing wheel, burst staging (`staging`), which
  tasks fire now and how far ahead;
- `workers.WorkerPool`: connected workers, their slots, silence, and the worker pick;
- `leases.LeaseKeeper`: running leases, deadlines, renewals, deferred starts, reconciliation, expiry;
- `pending.PendingQueue`: executions waiting for a worker, by priority with aging, and why they wait;
- `retries.InternalRetries`: backoff of our own commands that failed inside apply;
- `core.LeaderCore`: composes them; `outcomes`: what it does with the outcome of a proposal.
- `output_admission.OutputAdmission`: the workers' live output the runner takes into the log.

No module here does I/O or reads a clock (import-linter: "the pure core does no I/O"); the asyncio
driver is `cronraft.daemon.leader_runner`.
"""

# ruff: noqa: E402
from cronraft import _native

# Before the imports below: the compiled leader core, when built and current, loads in its place.
_native.extend_path(__path__, __name__)

from cronraft.daemon.leader.core import MAX_EARLY_RESULTS, LeaderCore
from cronraft.daemon.leader.leases import CONFIRM_AHEAD_MS, CONFIRM_MARGIN_MS, LeaseState, Refusal
from cronraft.daemon.leader.retries import INTERNAL_RETRY_MAX_MS, INTERNAL_RETRY_MS
from cronraft.daemon.leader.settings import LeaderSettings
from cronraft.daemon.leader.workers import EXACT_PICK, WorkerState

__all__ = [
    "CONFIRM_AHEAD_MS",
    "CONFIRM_MARGIN_MS",
    "EXACT_PICK",
    "INTERNAL_RETRY_MAX_MS",
    "INTERNAL_RETRY_MS",
    "MAX_EARLY_RESULTS",
    "LeaderCore",
    "LeaderSettings",
    "LeaseState",
    "Refusal",
    "WorkerState",
]
