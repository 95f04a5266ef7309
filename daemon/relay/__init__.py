"""Relaying on a follower (issue 18; docs/multi-region.md, docs/security.md "Relayed calls"): workers and
clients may connect to any node. A follower relays a worker's `WorkerGateway.Connect` stream to the leader
(`stream.relay_worker`, entered from daemon.services.worker_gateway) and forwards a client's writes there
(`writes.WriteForwarder`, a server interceptor), instead of sending them away with the leader's address.

- `core`: `Relay`, one per node: whether and where to relay (the leader this node knows, never from the
  leader itself, never a call another member relayed), its bounds (streams relayed and writes in flight:
  beyond them RESOURCE_EXHAUSTED), the channels to the leader (the members' TLS and member token, the
  message sizes of a direct client), and the caller's identity for the leader
  (daemon.security.relayed).
- `writes`: `WriteForwarder`, the interceptor that forwards the Scheduler methods that change something.
- `stream`: `relay_worker`, the bidirectional proxy of one worker stream.

`[cluster] relay = false` turns all of it off: followers answer with the redirect they always gave.
"""

from cronraft.daemon.relay.core import Relay, forwarded_method
from cronraft.daemon.relay.stream import relay_worker
from cronraft.daemon.relay.writes import WriteForwarder

__all__ = ["Relay", "WriteForwarder", "forwarded_method", "relay_worker"]
