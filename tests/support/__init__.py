"""Test support shared by every tier (unit, sim, integration, fault): import it as `tests.support.X`.

- `ports`: loopback TCP ports no other concurrent test process is handed (a cross-process reservation).
- `wait`: `wait_until` / `wait_until_async`, the one bounded poll for a condition with no event
  (`WaitTimeout` when it runs out).
- `clock`: `FakeClock`, hand-moved wall and monotonic time in every clock shape the code reads.
- `nodeconfig`: the `schedd` config both real-process harnesses write (`node_config`, `toml_dumps`).
- `cluster`: `ProcessCluster`, the one real-process harness (nodes and workers by name, their logs,
  Cluster.Status polls and waits) under the integration `Cluster` and the fault `FaultCluster`.
"""
