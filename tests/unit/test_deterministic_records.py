"""Replicas store the same bytes: records holding protobuf maps (a spec's tags, env, headers, worker
labels) are serialized deterministically. Python protobuf writes map entries in an order that changes
from one process to the next, so two replicas applying the same log stored different bytes for a task
with two tags, and the state digest (raft.digest, fault rule R9) could tell them apart. Each process
below applies the same log to a fresh store; their stores must hash alike."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import hashlib
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine

T0 = 1_767_225_600_000
kv = MemKV()
sm = StateMachine(kv)
spec = common_pb2.TaskSpec(
    name="t",
    schedule=common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="* * * * *")),
    payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
)
for i in range(16):
    spec.tags[f"k{i}"] = f"v{i}"
    spec.payload.command.env[f"E{i}"] = "x"
    spec.worker_labels[f"l{i}"] = "y"
C = commands_pb2.Command
entries = [
    [C(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))],
    [C(request_id=f"r{n}", stamped_at_ms=T0 + 1,
       create_task=commands_pb2.CreateTask(task_id=make_id(T0, n.to_bytes(10, "big")), spec=spec))
     for n in range(3)],
]
for index, cmds in enumerate(entries, start=1):
    sm.apply_entry(index, encode_batch(cmds))
h = hashlib.sha256()
for name, values in sorted(kv.dump().items()):
    for k in sorted(values):
        h.update(name.encode() + b"\\0" + k + b"\\0" + values[k])
print(h.hexdigest())
"""


def test_three_processes_applying_one_log_store_the_same_bytes() -> None:
    digests = {
        subprocess.run([sys.executable, "-c", _SCRIPT], check=True, capture_output=True, text=True).stdout
        for _ in range(3)
    }
    assert len(digests) == 1, digests
