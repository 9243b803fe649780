"""The whole suite as two pytest processes at once: what `./dev test` runs with no arguments.

Most of the suite's wall time is waiting, not computing: real-time calls through the
real FreeSWITCH, espeak-ng callers talking at the speed of speech, `ivr serve`
subprocesses. So the real-time tests (tests/freeswitch, tests/conversations) run in one
process while everything else runs in another. Each shard's output is printed whole
when it ends (first the one that ends first); the exit code is the first non-zero one,
and a shard that collected no tests (pytest's 5) fails the run too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REALTIME = ["tests/freeswitch", "tests/conversations"]
SHARDS = {
    "real-time (tests/freeswitch, tests/conversations)": REALTIME,
    "everything else": [f"--ignore={path}" for path in REALTIME],
}


def main() -> int:
    logs = Path(tempfile.mkdtemp(prefix="ivr-shards-"))
    started = time.monotonic()
    running: dict[str, tuple[subprocess.Popen, Path]] = {}
    for name, args in SHARDS.items():
        log = logs / f"{len(running)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=ROOT,
                                    stdout=out, stderr=subprocess.STDOUT, env=os.environ)
        running[name] = (proc, log)
        print(f"shard {name}: pytest {' '.join(args)} (pid {proc.pid})", flush=True)
    codes: list[int] = []
    try:
        _wait(running, started, codes)
    finally:  # interrupted: no shard outlives the run
        for proc, _log in running.values():
            proc.terminate()
    failed = [c for c in codes if c != 0]
    print(f"\nshards: {'all passed' if not failed else 'FAILED'} "
          f"in {time.monotonic() - started:.0f} s (exit codes {codes})", flush=True)
    return (failed[0] if failed[0] > 0 else 1) if failed else 0


def _wait(running: dict[str, tuple[subprocess.Popen, Path]], started: float,
          codes: list[int]) -> None:
    while running:
        for name, (proc, log) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[name]
            took = time.monotonic() - started
            print(f"\n===== shard {name}: exit {code} after {took:.0f} s =====", flush=True)
            sys.stdout.write(log.read_text(errors="replace"))
            sys.stdout.flush()
            codes.append(code)
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
