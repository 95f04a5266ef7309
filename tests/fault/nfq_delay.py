"""Delay every packet of one NFQUEUE by N(delay, jitter) milliseconds (the kernel here has no netem).

Run inside a namespace whose iptables send packets to the queue with `--queue-bypass` (so that traffic
flows normally whenever this daemon is not running):

    ip netns exec NS python tests/fault/nfq_delay.py QNUM DELAY_MS JITTER_MS [LOSS_PERCENT]

It prints "ready" on stdout once bound, then runs until SIGTERM/SIGINT, when it releases every packet it
still holds and unbinds. Packets keep their order only as far as the jitter allows (like netem).
Needs the PyPI package `netfilterqueue` (built against Debian's libnetfilter-queue-dev) and root.
See shared/docs/fault-testing.md, section 3.4.
"""

from __future__ import annotations

import heapq
import random
import select
import signal
import socket
import sys
import time
from typing import Any

from netfilterqueue import NetfilterQueue  # type: ignore[import-not-found,import-untyped,unused-ignore]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: nfq_delay.py QNUM DELAY_MS JITTER_MS [LOSS_PERCENT]", file=sys.stderr)
        return 2
    qnum = int(argv[0])
    delay_s, jitter_s = float(argv[1]) / 1000, float(argv[2]) / 1000
    loss = float(argv[3]) / 100 if len(argv) > 3 else 0.0
    heap: list[tuple[float, int, Any]] = []
    seq = 0
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_packet(pkt: Any) -> None:
        nonlocal seq
        if loss and random.random() < loss:
            pkt.drop()
            return
        release = time.monotonic() + max(0.0, random.gauss(delay_s, jitter_s))
        heapq.heappush(heap, (release, seq, pkt))
        seq += 1

    nfq = NetfilterQueue()
    nfq.bind(qnum, on_packet, max_len=8192)
    sock = socket.fromfd(nfq.get_fd(), socket.AF_UNIX, socket.SOCK_STREAM)
    print("ready", flush=True)
    try:
        while not stop:
            wait = min(0.05, max(0.0, heap[0][0] - time.monotonic())) if heap else 0.05
            try:
                readable = select.select([sock], [], [], wait)[0]
            except InterruptedError:
                continue
            if readable:
                nfq.run(block=False)
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                heapq.heappop(heap)[2].accept()
    finally:
        for _, _, pkt in heap:
            pkt.accept()
        nfq.unbind()
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
