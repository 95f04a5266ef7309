"""Hierarchical timing wheel: holds keyed deadlines and hands them out once the caller's time passes.

Pure: imports nothing of the project and reads no clock; time is passed in as integer milliseconds.
The contract is in the docstring of `cronraft.timerwheel._wheel`.
"""

from cronraft.timerwheel._wheel import TimingWheel

__all__ = ["TimingWheel"]
