"""Frame benchmark: N concurrent audio-fork streams into one worker's media server.

Run: .venv/bin/python bench/bench_frames.py --streams 200 --seconds 10 [--fast]
         [--procs 2] [--batch-ms 5] [--stt emulated|none] [--py-spy out.svg] [--json]

A server process runs what one ``ivr serve`` worker runs for audio: the media
server (esl_app/media/server.py) and, per stream, the call's listen source
(esl_app/telephony/audio.py: VAD + end of turn inline, the recogniser fed every
frame). The recogniser is the cloud profile's emulated Transcribe (100-300 ms,
words from the line table) or none. Client processes are the emulator's
audio forks (esl_app/sim/emulator/audio.py): real-time 20 ms frames, each caller
saying a clinic line every few seconds; ``--fast`` instead pushes pre-masked
frames as fast as the server takes them (throughput ceiling).

Printed: server CPU microseconds per frame (CPU time of the server process over
the measured window / frames it received), frames/s per core (1e6 / that),
RSS per stream (server RSS with all streams up minus before any connected),
client-side late frames (> 100 ms behind their slot) and what the server
heard (speech starts, ends of turn, finals with the right words).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

LINES = ("I'd like to book an appointment with Dr. Smith", "next Tuesday morning",
         "the first one", "John Smith", "yes", "no thanks", "Wednesday afternoon",
         "the second one", "Maria Garcia", "Thursday morning")


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- server process ---------------------------------------------------------------------


class _Call:
    """Counts what the listen source posts to the call (the controller's queue)."""

    def __init__(self, stats: dict[str, int], expected: list[str]) -> None:
        self.stats = stats
        self.expected = expected

    def post(self, msg: Any) -> None:
        if msg.kind == "speech_start":
            self.stats["speech_starts"] += 1
        elif msg.kind == "transcript":
            self.stats["finals"] += 1
            if msg.text and msg.text in LINES:
                self.stats["finals_right"] += 1
            elif msg.text:
                self.stats["finals_other"] += 1
        elif msg.kind == "media_lost":
            self.stats["media_lost"] += 1


class _Session:
    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self.channel_up = True

    def api(self, cmd: str, timeout: float = 5.0) -> str:
        return "+OK\n"


def serve(args: argparse.Namespace) -> None:
    from esl_app.config.tenants import parse_tenants
    from esl_app.media.server import MediaRegistry, MediaServer
    from esl_app.sim.emulated_stt import EmulatedTranscribe
    from esl_app.sim.latency import CLOUD, Delays
    from esl_app.sim.loadcallers import synthetic_tenants
    from esl_app.telephony.audio import AudioListenSource

    tenant = next(iter(parse_tenants(synthetic_tenants(1)).tenants))
    rss_bare = _rss_kb()  # before any call's listen source exists
    registry = MediaRegistry()
    try:
        media = MediaServer("127.0.0.1", 0, registry, batch_ms=args.batch_ms,
                            max_batch_ms=args.max_batch_ms if args.max_batch_ms is not None
                            else 30.0, max_streams=args.streams + 10).start()
    except TypeError:  # an older server (before/after comparisons)
        media = MediaServer("127.0.0.1", 0, registry, max_streams=args.streams + 10).start()
    delays = Delays(CLOUD, 1)
    stt: Any = EmulatedTranscribe(args.table, lambda: delays.draw("stt"))
    if args.stt == "none":
        class _NoStt:
            name = "none"

            def open_stream(self, *a: Any, **k: Any) -> None:
                return None

        stt = _NoStt()
    stats = {"speech_starts": 0, "finals": 0, "finals_right": 0, "finals_other": 0,
             "media_lost": 0}
    sources = []
    tokens = {}
    for i in range(args.streams):
        uuid = f"bench-{i:05d}"
        fallback = {"fallback_stt": lambda: None} if args.stt == "resilient" else {}
        src = AudioListenSource(_Call(stats, list(LINES)), tenant, _Session(uuid),
                                registry=registry, media_url="ws://unused", stt=stt, **fallback)
        sources.append(src)
        tokens[uuid] = src.token
    host, port = media.address
    print(json.dumps({"port": port, "tokens": tokens, "pid": os.getpid(), "rss_bare_kb": rss_bare}),
          flush=True)

    def mark() -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu_s": ru.ru_utime + ru.ru_stime, "rss_kb": _rss_kb(),
                "bytes_in": sum(s.stt_bytes for s in sources) if args.stt != "none" else
                sum(e.conn.bytes_in for e in (registry.get(s.uuid) for s in sources)
                    if e and e.conn),
                "vad_ms": sum(s.detector.position_ms for s in sources),
                "streams": media.active_streams,
                "reader": getattr(media, "reader_stats", {"batches": 0, "reads": 0}), **stats}

    from gevent.fileobject import FileObjectThread

    stdin = FileObjectThread(sys.stdin)
    for line in stdin:
        cmd = line.strip()
        if cmd == "mark":
            print(json.dumps(mark()), flush=True)
        elif cmd == "quit":
            break
    media.stop()


# -- client processes -------------------------------------------------------------------


class _Caller:
    """A caller saying a line every ``every`` seconds (what the fork asks for)."""

    def __init__(self, rng: random.Random, every: float) -> None:
        self.rng = rng
        self.every = every
        self.hung_up = False
        self.first = True

    def next_utterance(self, timeout: float | None = None) -> str | None:
        gevent.sleep(self.rng.uniform(0.2, 1.0) if self.first else self.every)
        self.first = False
        return self.rng.choice(LINES)

    def fire_custom(self, subclass: str, headers: Any = (), body: str | None = None) -> None:
        pass


def client(args: argparse.Namespace) -> None:
    os.environ["IVR_EMULATED_STT_TABLE"] = args.table
    from esl_app.sim.emulated_stt import LineTable
    from esl_app.sim.emulator.audio import AudioFork

    table = LineTable(args.table)
    tokens: dict[str, str] = json.loads(Path(args.tokens).read_text())
    mine = sorted(tokens)[args.index::args.procs]
    url = f"ws://127.0.0.1:{args.port}/fork/"
    rng = random.Random(args.index)

    class Fork(AudioFork):
        def _line_ready(self, text: str, pcm: bytes) -> None:
            table.register(text, pcm)

    forks: list[Any] = []
    if args.fast:
        gevent.joinall([gevent.spawn(_fast_stream, url + u, tokens[u], args) for u in mine])
        print(json.dumps({"frames_sent": 0, "late": 0}), flush=True)
        return
    for u in mine:
        f = Fork(lead_ms=200)
        f.start(url + u, "mono", "8k", json.dumps({"token": tokens[u]}),
                _Caller(random.Random(rng.random()), args.every))
        forks.append(f)
        gevent.sleep(args.ramp / max(1, len(mine)))
    gevent.sleep(args.run_s)
    for f in forks:
        f.stop()
    gevent.joinall([g for f in forks for g in f._greenlets[:1]], timeout=10)
    print(json.dumps({"frames_sent": sum(f.frames_sent for f in forks),
                      "late": sum(f.late for f in forks)}), flush=True)


def _fast_stream(url: str, token: str, args: argparse.Namespace) -> None:
    """Push a whole pre-masked caller line per write, as fast as the server reads."""
    import websocket

    from esl_app.sim.emulator.audio import _client_frame, _prepared, synthesize_cached

    ws = websocket.create_connection(url, subprotocols=["audio.drachtio.org"], timeout=10)
    ws.send(json.dumps({"token": token}))
    pcm = synthesize_cached(LINES[0], "en-us", 8000, 160)
    frames = list(_prepared(pcm, 200, 600, 8000).frames)
    blob = b"".join(frames)  # the whole line with its silences, in one write
    end = time.monotonic() + args.run_s
    while time.monotonic() < end:
        ws.sock.sendall(blob)
    ws.sock.sendall(_client_frame(0x8, b"\x03\xe8"))
    ws.close()


# -- parent -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=1, help="client processes")
    ap.add_argument("--fast", action="store_true", help="as fast as possible, not real time")
    ap.add_argument("--batch-ms", type=float, default=5.0, help="media reader's least pause")
    ap.add_argument("--max-batch-ms", type=float, default=None,
                    help="media reader's longest pause (default 30; = --batch-ms: fixed)")
    ap.add_argument("--stt", choices=("emulated", "resilient", "none"), default="emulated",
                    help="resilient: inside the fallback wrapper, as a cloud recogniser "
                         "runs in ivr serve")
    ap.add_argument("--every", type=float, default=3.0, help="seconds between caller lines")
    ap.add_argument("--py-spy", dest="py_spy", default=None,
                    help="record the server with py-spy during the window (svg path)")
    ap.add_argument("--json", action="store_true")
    # internal
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--table", default="", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", default="", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--run-s", dest="run_s", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds to start all streams")
    args = ap.parse_args()
    if args.serve:
        serve(args)
        return 0
    if args.client:
        client(args)
        return 0
    tmp = tempfile.TemporaryDirectory(prefix="bench-frames-")
    table = str(Path(tmp.name) / "lines")
    me = [sys.executable, os.path.abspath(__file__)]
    srv = subprocess.Popen(me + ["--serve", "--streams", str(args.streams), "--table", table,
                                 "--batch-ms", str(args.batch_ms), "--stt", args.stt]
                           + ([] if args.max_batch_ms is None
                              else ["--max-batch-ms", str(args.max_batch_ms)]),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hello = json.loads(srv.stdout.readline())
    tokens_path = Path(tmp.name) / "tokens.json"
    tokens_path.write_text(json.dumps(hello["tokens"]))

    def mark() -> dict[str, Any]:
        srv.stdin.write("mark\n")
        srv.stdin.flush()
        return json.loads(srv.stdout.readline())

    m0 = mark()
    run_s = args.ramp + args.warmup + args.seconds + 1.0
    clients = [subprocess.Popen(me + ["--client", "--table", table, "--tokens", str(tokens_path),
                                      "--port", str(hello["port"]), "--index", str(k),
                                      "--procs", str(args.procs), "--run-s", str(run_s),
                                      "--every", str(args.every), "--ramp", str(args.ramp)]
                                + (["--fast"] if args.fast else []),
                                stdout=subprocess.PIPE, text=True)
               for k in range(args.procs)]
    time.sleep(args.ramp + args.warmup)
    ma = mark()
    spy = None
    if args.py_spy:
        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"),
                                "record", "-o", args.py_spy, "-p", str(hello["pid"]), "-f",
                                "speedscope" if args.py_spy.endswith(".json") else
                                "raw" if args.py_spy.endswith(".txt") else "flamegraph",
                                "-d", str(int(args.seconds)), "-r", "200", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c0 = [_proc_cpu(p.pid) for p in clients]
    time.sleep(args.seconds)
    mb = mark()
    c1 = [_proc_cpu(p.pid) for p in clients]
    outs = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in clients]
    if spy is not None:
        spy.wait(timeout=60)
    srv.stdin.write("quit\n")
    srv.stdin.flush()
    srv.wait(timeout=30)
    frames = (mb["bytes_in"] - ma["bytes_in"]) / 320
    cpu = mb["cpu_s"] - ma["cpu_s"]
    us = cpu / frames * 1e6 if frames else None
    sent = sum(o["frames_sent"] for o in outs)
    late = sum(o["late"] for o in outs)
    report = {
        "streams": args.streams, "mode": "fast" if args.fast else "real-time",
        "stt": args.stt, "batch_ms": args.batch_ms, "max_batch_ms": args.max_batch_ms,
        "window_s": args.seconds,
        "streams_up": ma["streams"],
        "frames_in_window": int(frames), "frames_per_s": round(frames / args.seconds),
        "server_cpu_percent": round(cpu / args.seconds * 100, 1),
        "us_per_frame": None if us is None else round(us, 2),
        "frames_per_s_per_core": None if not us else round(1e6 / us),
        # the connection alone, and with the call's listen source (VAD, endpointing, STT)
        "rss_per_stream_kb": round((ma["rss_kb"] - m0["rss_kb"]) / max(1, args.streams), 1),
        "rss_per_call_kb": round((ma["rss_kb"] - hello["rss_bare_kb"]) / max(1, args.streams), 1),
        "server_rss_mb": round(mb["rss_kb"] / 1024, 1),
        "reads_per_batch": round((mb["reader"]["reads"] - ma["reader"]["reads"])
                                 / max(1, mb["reader"]["batches"] - ma["reader"]["batches"]), 1),
        "client_cpu_percent": round((sum(c1) - sum(c0)) / args.seconds * 100, 1),
        "client_frames_sent": sent, "client_frames_late": late,
        "speech_starts": mb["speech_starts"], "finals": mb["finals"],
        "finals_right": mb["finals_right"], "finals_other": mb["finals_other"],
        "media_lost": mb["media_lost"],
    }
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:24} {v}")
    return 0


def _proc_cpu(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


if __name__ == "__main__":
    sys.exit(main())
