"""Replicated state: the pure state machine (codec, apply, schedule maths) and its adapters
(LMDB store, pysyncobj replicator)."""
