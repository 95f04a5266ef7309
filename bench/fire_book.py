"""The fires of a sustained load, read back from the workers' ledgers while the load goes on (W5).

A sustained load writes a ledger row per start for as long as it runs (600,000 rows in W5's 60 s at
10,000/s, several million over a ramp): `read_ledgers` (bench/common.py), which parses every file from
the start each time, would cost more and more CPU on the machine being measured. `LedgerTail` reads
only the complete lines added since its last read, and `FireBook` keeps, for each observed window, only
the first start of each (task, nominal time) whose nominal time falls in it, and a count of the others
(duplicates). Rows of nominal times outside every window (warm-up, settling, grace) are dropped.

`FireBook.figures` computes a window's figures from what it holds: fires expected (tasks x nominal
times per task in the window), started, lost, duplicates, lateness (start wall time - nominal time)
distribution and the share within +-1 s. Reading again later (more rows) and recomputing is how a late
start stops counting as lost.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import pct

__all__ = ["FireBook", "LedgerTail", "Window"]


class LedgerTail:
    """Yields (task id, nominal ms, start wall ms) of the ledger rows written since the previous read."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[Path, int] = {}
        self.rows_read = 0

    def read(self) -> list[tuple[str, int, int]]:
        out: list[tuple[str, int, int]] = []
        for path in sorted(self.directory.glob("ledger-*.tsv")):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line being written stays for the next read
            self._offsets[path] = offset + end
            for line in data[:end].decode("ascii").splitlines():
                parts = line.split("\t", 3)
                if len(parts) == 4:
                    out.append((parts[0], int(parts[1]), int(parts[2])))
        self.rows_read += len(out)
        return out


@dataclass
class Window:
    """[start_ms, end_ms) of nominal times observed at one rate; `fires_per_task` nominal times each."""

    rate: int
    tasks: int
    start_ms: int
    end_ms: int
    fires_per_task: int
    first: dict[tuple[str, int], int] = field(default_factory=dict)  # (task, nominal) -> first start ms
    duplicates: int = 0

    @property
    def expected(self) -> int:
        return self.tasks * self.fires_per_task


class FireBook:
    def __init__(self) -> None:
        self.windows: list[Window] = []
        self._starts: list[int] = []  # windows' start_ms, sorted (windows never overlap)

    def add_window(self, window: Window) -> None:
        assert not self.windows or window.start_ms >= self.windows[-1].end_ms, "windows in time order"
        self.windows.append(window)
        self._starts.append(window.start_ms)

    def add(self, rows: list[tuple[str, int, int]]) -> None:
        for task, nominal, start in rows:
            i = bisect.bisect_right(self._starts, nominal) - 1
            if i < 0 or nominal >= self.windows[i].end_ms:
                continue
            w = self.windows[i]
            key = (task, nominal)
            seen = w.first.get(key)
            if seen is None:
                w.first[key] = start
            else:
                w.duplicates += 1
                if start < seen:
                    w.first[key] = start

    @staticmethod
    def figures(w: Window) -> dict[str, float | int]:
        lags = [s - n for (_, n), s in w.first.items()]
        per_task = Counter(t for t, _ in w.first)
        # A task cannot start more distinct nominal times than the window holds: any beyond that would
        # be fires off the schedule (none expected; counted, not hidden).
        unexpected = sum(max(0, c - w.fires_per_task) for c in per_task.values())
        started = len(w.first) - unexpected
        expected = max(1, w.expected)
        seconds = (w.end_ms - w.start_ms) / 1000
        return {
            "rate_per_s": w.rate,
            "tasks": w.tasks,
            "window_s": seconds,
            "expected_fires": w.expected,
            "started": started,
            "lost": max(0, w.expected - started),
            "duplicates": w.duplicates,
            "unexpected_fires": unexpected,
            "started_per_s": started / seconds if seconds else float("nan"),
            "within_1s_pct": sum(1 for lag in lags if abs(lag) <= 1000) / expected * 100,
            "within_100ms_pct": sum(1 for lag in lags if abs(lag) <= 100) / expected * 100,
            "lateness_ms_p50": pct(lags, 50),
            "lateness_ms_p99": pct(lags, 99),
            "lateness_ms_p999": pct(lags, 99.9),
            "lateness_ms_max": max(lags) if lags else float("nan"),
            "lateness_ms_min": min(lags) if lags else float("nan"),
        }

    def complete(self, w: Window) -> bool:
        return len(w.first) >= w.expected
