"""Replicated state: the pure state machine (codec, apply, schedule maths) and its adapters
(LMDB store, pysyncobj replicator)."""

from cronraft import _native

# The compiled modules, when built and current, load in place of these (cronraft/_native.py).
_native.extend_path(__path__, __name__)
