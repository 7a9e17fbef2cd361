"""Delay (and jitter) the packets of one NFQUEUE, preserving their order.

Runs inside a router namespace where an iptables rule such as
``iptables -A FORWARD -o IF -j NFQUEUE --queue-num 0 --queue-bypass`` sends packets
here (this kernel has no netem). Each packet gets a due time
``max(arrival + delay + U(-jitter, jitter), due time of the packet before it)`` and is
accepted when due: a packet never leaves before one queued ahead of it.

Because due times never decrease, held packets form a FIFO, and since the kernel numbers
queued packets in order, one NFQNL_MSG_VERDICT_BATCH ("accept every id <= N") releases
everything that is due: one sendmsg per wake-up instead of one per packet. The library
`netfilterqueue` opens and configures the queue (metadata only: the payload is never
copied); packet ids are read straight off the netlink socket, which is cheaper than a
Python callback and a Packet object per packet.

Control on stdin, one command a line, each answered on stdout:
``set DELAY_MS JITTER_MS`` -> ``ok``; ``stats`` -> one JSON object. EOF or SIGTERM:
release everything held and exit 0. Prints ``ready`` once the queue is bound.
"""

from __future__ import annotations

import argparse
import collections
import errno
import gc
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

from netfilterqueue import COPY_META, NetfilterQueue

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = (NFNL_SUBSYS_QUEUE << 8) | 0
NFQNL_MSG_VERDICT = (NFNL_SUBSYS_QUEUE << 8) | 1
NFQNL_MSG_VERDICT_BATCH = (NFNL_SUBSYS_QUEUE << 8) | 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NF_ACCEPT = 1
NLA_TYPE_MASK = 0x3FFF

# A drain pass handles at most this many packets before releasing what is due, so a
# flood of arrivals cannot hold back departures.
DRAIN_BUDGET = 256
# Release packets due within this much of now: saves a wake-up for a few tens of µs.
EARLY_S = 50e-6
# Idle wake-up, so a stop request is noticed even with nothing queued.
IDLE_S = 0.5


class Delayer:
    """Hold NFQUEUE packets until due, release them in id order."""

    def __init__(self, queue_num: int, max_len: int, delay_ms: float, jitter_ms: float,
                 seed: int | None, batch: bool, rcvbuf: int) -> None:
        self.queue_num = queue_num
        self.batch = batch
        self.rng = random.Random(seed)
        self.set_delay(delay_ms, jitter_ms)
        self.nfq = NetfilterQueue()
        # The library wants a callback; it is never called since we read the socket ourselves.
        self.nfq.bind(queue_num, _unused_callback, max_len=max_len, mode=COPY_META,
                      sock_len=rcvbuf)
        # A dup of the library's netlink socket: same port id, so the kernel takes our
        # verdicts for this queue.
        self.sock = socket.socket(fileno=os.dup(self.nfq.get_fd()))
        self.sock.setblocking(False)
        self.buf = bytearray(65536)
        self.held: collections.deque[tuple[float, int]] = collections.deque()
        self.last_due = 0.0
        self.seq = 0
        self.stats: dict[str, Any] = dict(received=0, released=0, verdict_msgs=0, wakeups=0,
                                          max_held=0, late_max_ms=0.0, late_sum_ms=0.0,
                                          enobufs=0, netlink_errors=0)

    def set_delay(self, delay_ms: float, jitter_ms: float) -> None:
        """Change the delay for packets arriving from now on."""
        if not 0 <= jitter_ms <= delay_ms:
            raise ValueError("need 0 <= jitter <= delay")
        self.delay_s = delay_ms / 1000
        self.jitter_s = jitter_ms / 1000

    def next_timeout(self) -> float:
        """Seconds until the first held packet is due (IDLE_S when none is held)."""
        if not self.held:
            return IDLE_S
        return max(0.0, self.held[0][0] - time.monotonic())

    def drain(self) -> None:
        """Read up to DRAIN_BUDGET queued-packet notices, giving each a due time."""
        recv_into, buf, held = self.sock.recv_into, self.buf, self.held
        unpack_from, monotonic, uniform = struct.unpack_from, time.monotonic, self.rng.uniform
        delay_s, jitter_s = self.delay_s, self.jitter_s
        last_due = self.last_due
        for _ in range(DRAIN_BUDGET):
            try:
                n = recv_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:
                # ENOBUFS: notices were lost; their packets still get released, by the next
                # batch verdict, since it covers every lower id.
                if exc.errno != errno.ENOBUFS:
                    raise
                self.stats["enobufs"] += 1
                continue
            now = monotonic()
            off = 0
            while off + 16 <= n:
                mlen, mtype = unpack_from("=IH", buf, off)
                if mlen < 16:
                    break
                if mtype == NFQNL_MSG_PACKET:
                    pkt_id = _packet_id(buf, off, mlen)
                    if pkt_id is not None:
                        due = now + delay_s + (uniform(-jitter_s, jitter_s) if jitter_s else 0.0)
                        last_due = due if due > last_due else last_due
                        held.append((last_due, pkt_id))
                        self.stats["received"] += 1
                elif mtype == NLMSG_ERROR:
                    self.stats["netlink_errors"] += 1
                off += (mlen + 3) & ~3
        self.last_due = last_due
        if len(held) > self.stats["max_held"]:
            self.stats["max_held"] = len(held)

    def release(self, everything: bool = False) -> None:
        """Accept every held packet that is due (all of them when `everything`)."""
        held = self.held
        if not held:
            return
        now = time.monotonic()
        limit = float("inf") if everything else now + EARLY_S
        last_id = -1
        late_max, late_sum, count = self.stats["late_max_ms"], 0.0, 0
        while held and held[0][0] <= limit:
            due, last_id = held.popleft()
            late = (now - due) * 1000
            late_sum += late
            late_max = late if late > late_max else late_max
            count += 1
            if not self.batch:
                self._verdict(NFQNL_MSG_VERDICT, last_id)
        if count:
            self.stats["released"] += count
            self.stats["late_sum_ms"] += late_sum
            self.stats["late_max_ms"] = late_max
            if self.batch:
                self._verdict(NFQNL_MSG_VERDICT_BATCH, last_id)

    def _verdict(self, msg_type: int, pkt_id: int) -> None:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        msg = (struct.pack("=IHHII", 32, msg_type, NLM_F_REQUEST, self.seq, 0)
               + struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", self.queue_num)
               + struct.pack("=HH", 12, NFQA_VERDICT_HDR) + struct.pack(">II", NF_ACCEPT, pkt_id))
        for _ in range(100):
            try:
                self.sock.send(msg)
                break
            except BlockingIOError:
                # The kernel takes verdicts synchronously; a full socket is momentary.
                time.sleep(0.0001)
        self.stats["verdict_msgs"] += 1

    def close(self) -> None:
        """Release what is held and unbind the queue."""
        self.release(everything=True)
        self.sock.close()
        self.nfq.unbind()


def _unused_callback(packet: Any) -> None:
    packet.accept()


def _packet_id(buf: bytearray, off: int, mlen: int) -> int | None:
    """The packet id in one NFQNL_MSG_PACKET message (its first attribute in practice)."""
    attr, end = off + 20, off + mlen
    while attr + 4 <= end:
        alen, atype = struct.unpack_from("=HH", buf, attr)
        if alen < 4:
            return None
        if atype & NLA_TYPE_MASK == NFQA_PACKET_HDR:
            return int(struct.unpack_from(">I", buf, attr + 4)[0])
        attr += (alen + 3) & ~3
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the delayer until stdin closes, SIGTERM, or --max-seconds."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queue-num", type=int, default=0)
    # 100 Mbit/s x 50 ms is ~420 full-size frames; room for several times that.
    p.add_argument("--max-len", type=int, default=8192)
    p.add_argument("--rcvbuf", type=int, default=8 << 20)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-batch", action="store_true", help="one verdict per packet (slower)")
    p.add_argument("--max-seconds", type=float, default=86400.0,
                   help="exit after this long even if stdin stays open (orphan guard)")
    args = p.parse_args(argv)

    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    # Held entries are tuples of numbers: no cycles to collect, and a collection pass
    # in the middle of a burst would delay packets.
    gc.disable()
    d = Delayer(args.queue_num, args.max_len, args.delay_ms, args.jitter_ms, args.seed,
                not args.no_batch, args.rcvbuf)
    print("ready", flush=True)
    stdin_fd = sys.stdin.fileno()
    pending = b""
    deadline = time.monotonic() + args.max_seconds
    try:
        while not stop and time.monotonic() < deadline:
            try:
                readable, _, _ = select.select([d.sock, stdin_fd], [], [], d.next_timeout())
            except InterruptedError:
                continue
            d.stats["wakeups"] += 1
            if d.sock in readable:
                d.drain()
            if stdin_fd in readable:
                chunk = os.read(stdin_fd, 4096)
                if not chunk:
                    break
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    print(_command(d, line.decode().split()), flush=True)
            d.release()
    finally:
        d.close()
    return 0


def _command(d: Delayer, words: list[str]) -> str:
    try:
        if words[:1] == ["set"] and len(words) == 3:
            d.set_delay(float(words[1]), float(words[2]))
            return "ok"
        if words == ["stats"]:
            return json.dumps(d.stats)
    except ValueError as exc:
        return f"error {exc}"
    return f"error unknown command {' '.join(words)!r}"


if __name__ == "__main__":
    sys.exit(main())
