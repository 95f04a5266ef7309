"""The `schedd` daemon: configuration, gRPC servicers, leader duties (horizon loader, fire planner,
dispatcher, lease keeper), metrics, logging and the process entry point.

It sits on top of `cronraft.raft` (replicated state) and wires it to the network; nothing below it
imports it.
"""

from cronraft import _native

# The compiled modules of the leader's loop, when built and current, load in place of these.
_native.extend_path(__path__, __name__)
