"""The worker: `schedworker` and the `Worker` class.

A worker keeps one `WorkerGateway.Connect` stream open to the leader (following `NotLeader` redirects and
the `cronraft-leader` trailer, else trying the configured servers round robin with capped exponential
backoff), runs the attempts it is offered, renews their leases with one heartbeat per interval, and
reports results through the durable outbox.

Payload kinds (docs/payloads.md): argv commands and shell strings run as process groups
(`_process_runner.AttemptRunner`); HTTP requests (`_http`) and Python handlers (`handlers`) run in-process
(`_inprocess_runner.InProcessRunner`). Handlers are registered with `@worker.handler(name)`, or on the
module-level registry (`cronraft.client.handlers.handler`) that every worker falls back on and that
`schedworker --handlers MODULE` fills by importing MODULE.

The worker's policy (`_policy.WorkerPolicy`: `schedworker --policy FILE`, `--allow-shell`,
`--allow-http-loopback`) decides what it runs at all: a lease it refuses (a payload kind it does not
accept, a program off its allowlist, a secret it does not hold, an address its egress rules refuse) is
reported ATTEMPT_REFUSED with the reason, before anything starts, and its execution ends failed.

The package (docs/architecture.md, "The worker"):

- `agent`: `Worker`, the stream's loops and the life of an attempt;
- `config`: `WorkerConfig` and who payloads run as (`process_identity`);
- `routing`: which node to connect to next (redirects, round robin, silent nodes last);
- `session`: one welcomed stream;
- `heartbeats`: the heartbeat loop of a welcomed stream and what the leader's answers do;
- `leases`: lease deadlines, renewal, revocation, self-fencing (DESIGN.md I5);
- `start_gate`: the policy check, held starts (fire ahead) and sensors, before a payload begins;
- `results`, `outbox`: results stored durably before they are sent, removed on acknowledgement;
- `live_output`: running attempts' output forwarded while a stream is open;
- `payloads`: the runner for a lease's payload kind (process group or in-process);
- `cli`: `schedworker`'s flags and `main`.
"""

from __future__ import annotations

from cronraft.client._policy import WorkerPolicy, load_policy, policy_from_dict
from cronraft.client.handlers import HandlerContext, HandlerRegistry
from cronraft.client.worker.agent import Worker
from cronraft.client.worker.cli import (
    build_parser,
    config_from_args,
    configure_logging,
    main,
    parse_duration,
    policy_from_args,
)
from cronraft.client.worker.config import DEFAULT_SERVER, WorkerConfig, process_identity

__all__ = [
    "DEFAULT_SERVER",
    "HandlerContext",
    "HandlerRegistry",
    "Worker",
    "WorkerConfig",
    "WorkerPolicy",
    "build_parser",
    "config_from_args",
    "configure_logging",
    "load_policy",
    "main",
    "parse_duration",
    "policy_from_args",
    "policy_from_dict",
    "process_identity",
]
