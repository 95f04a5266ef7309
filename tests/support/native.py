"""Tests that patch a function of a module the native apply core compiles (cronraft/_native.py).

A compiled module calls its own functions directly, so a patch of the module's attribute changes nothing
there: such a test would pass whatever the code does. It runs where the modules are Python (the pure
suite: CRONRAFT_NATIVE=0, which .ci/run runs too) and is skipped, saying so, where they are compiled.
"""

from __future__ import annotations

import pytest

from cronraft import _native

pure_python_only = pytest.mark.skipif(
    _native.in_use(),
    reason="patches a module the native apply core compiles; runs in the pure suite (CRONRAFT_NATIVE=0)",
)
