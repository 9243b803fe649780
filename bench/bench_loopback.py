"""Loopback benchmark: the kernel's cost of one 20 ms audio frame over local TCP.

Run: .venv/bin/python bench/bench_loopback.py [--streams 500] [--seconds 10] [--nagle] [--json]

Why: on one machine the load generator and the server share the cores, and every
audio frame crosses the kernel's loopback TCP. This measures that share with no
Python of ours in the way: a sender process writes one 328-byte frame (a masked
WebSocket frame of 320 bytes of 8 kHz L16) per stream every 20 ms, in four
phases like the emulator's pacer, and a receiver process reads every ready
socket from one epoll every 30 ms, as the media reader does at 500 streams.

The sender sets TCP_NODELAY by default, as libwebsockets (mod_audio_fork's
client) does: each frame is then its own segment, and on loopback the sender's
system call also runs the receiver's TCP input and its ACKs. ``--nagle`` leaves
Nagle's algorithm on, for comparison only (it would hold a frame up to a delayed
ACK: no real-time audio client does that).

Printed: microseconds of user and system CPU per frame, sender and receiver, and
the machine's softirq share (charged to no process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import sys
import time

FRAME = b"\x82\xfe\x01\x40" + b"\0" * 324  # header + mask + 320 bytes: 328 on the wire


def _cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def _softirq_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[6], sum(v)


def _receive(socks: list[socket.socket], seconds: float, out: int) -> None:
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    got = 0
    u0, s0 = _cpu()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for fd, _ev in ep.poll(0):
            try:
                got += len(by_fd[fd].recv(16384))
            except BlockingIOError:
                pass
        time.sleep(0.03)
    u1, s1 = _cpu()
    os.write(out, json.dumps({"frames": got // len(FRAME), "user": u1 - u0,
                              "sys": s1 - s0}).encode())
    os._exit(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--nagle", action="store_true", help="leave Nagle's algorithm on")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(args.streams)
    senders, receivers = [], []
    for _ in range(args.streams):
        c = socket.create_connection(listener.getsockname())
        s, _addr = listener.accept()
        if not args.nagle:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.setblocking(False)
        s.setblocking(False)
        senders.append(c)
        receivers.append(s)
    listener.close()
    rfd, wfd = os.pipe()
    if os.fork() == 0:
        for c in senders:
            c.close()
        _receive(receivers, args.seconds, wfd)
    for s in receivers:
        s.close()
    soft0, all0 = _softirq_ticks()
    u0, s0 = _cpu()
    t0 = time.monotonic()
    k = sent = 0
    while time.monotonic() - t0 < args.seconds:
        delay = t0 + k * 0.005 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for c in senders[k % 4::4]:
            try:
                c.send(FRAME)
                sent += 1
            except BlockingIOError:
                pass
        k += 1
    u1, s1 = _cpu()
    soft1, all1 = _softirq_ticks()
    os.wait()
    recv = json.loads(os.read(rfd, 4096))
    cores = os.cpu_count() or 1
    report = {
        "streams": args.streams, "nodelay": not args.nagle, "frames_sent": sent,
        "frames_received": recv["frames"],
        "sender_user_us": round((u1 - u0) / sent * 1e6, 2),
        "sender_sys_us": round((s1 - s0) / sent * 1e6, 2),
        "receiver_user_us": round(recv["user"] / max(1, recv["frames"]) * 1e6, 2),
        "receiver_sys_us": round(recv["sys"] / max(1, recv["frames"]) * 1e6, 2),
        "softirq_cores": round((soft1 - soft0) / max(1, all1 - all0) * cores, 3),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:18} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
