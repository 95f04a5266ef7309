"""Where the fault harness's workers connect first: the order of each worker's `--server` list.

A worker takes its servers in order (client/worker/routing.py). Before relaying (daemon.relay) every
worker ended on the leader whatever its list said, following the followers' redirects; with relaying it
stays on the first node that answers. `LeaderFirstCluster` puts the node that leads when a worker starts
first in its list, so that a scenario about workers losing the leader (S6) starts with every worker
connected straight to the leader, as it did before relaying, instead of trivially passing on workers
that a follower relays from the start.
"""

from __future__ import annotations

from collections.abc import Sequence

from tests.fault.cluster import FaultCluster

__all__ = ["LeaderFirstCluster", "reorder_servers"]


def reorder_servers(argv: Sequence[str], servers: Sequence[str], first: Sequence[str]) -> list[str]:
    """`argv` (a worker's command line) with its `--server` list in the order `first` names, then the
    rest in their own order. `servers`: the list as written, one address per node."""
    out = list(argv)
    i = out.index("--server") + 1
    listed = out[i].split(",")
    wanted = [s for s in first if s in listed]
    out[i] = ",".join([*wanted, *(s for s in listed if s not in wanted)])
    assert sorted(out[i].split(",")) == sorted(servers)
    return out


class LeaderFirstCluster(FaultCluster):
    """Each worker lists the current leader first (at its start: a restarted worker too)."""

    def _argv(self, name: str) -> list[str]:
        argv = super()._argv(name)
        if self._proc(name).kind != "worker":
            return argv
        lead = self.leader(timeout_s=2.0)
        if lead is None:
            return argv
        i = argv.index("--server") + 1
        listed = argv[i].split(",")  # one address per node, in node order (both modes)
        leader_address = listed[self.node_ids.index(lead[0])]
        return reorder_servers(argv, listed, [leader_address])
