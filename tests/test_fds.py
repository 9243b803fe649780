"""reserve_fds: the open-file limit raised and the fd table sized once, before the calls.

Each case runs in a fresh interpreter: limits and fd tables are per process, and
the test process's own must not change under the rest of the suite.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from esl_app.runtime.fds import SPARE_FDS, fd_table_size

PROBE = r"""
import json, logging, os, resource, sys, threading, time
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
soft, hard = (int(x) for x in sys.argv[2:4])
if soft:
    hard = hard or resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
threading.Thread(target=time.sleep, args=(5,), daemon=True).start()  # a threaded process
from esl_app.runtime.fds import fd_table_size, reserve_fds
open_before = sorted(os.listdir("/proc/self/fd"))
table_before = fd_table_size()
room = reserve_fds(int(sys.argv[1]))
open_after = sorted(os.listdir("/proc/self/fd"))
print(json.dumps({"room": room, "before": table_before, "after": fd_table_size(),
                  "limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                  "same_fds": open_before == open_after}))
"""


def _probe(sockets: int, soft: int = 0, hard: int = 0) -> tuple[dict, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(sockets), str(soft), str(hard)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_table_is_sized_once_and_no_descriptor_is_left_behind():
    r, err = _probe(3000)
    assert r["before"] < 3000 + SPARE_FDS <= r["after"]
    assert r["room"] == 3000 + SPARE_FDS
    assert r["same_fds"]
    assert "WARNING" not in err


def test_a_low_soft_limit_is_raised_toward_the_hard_one():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"hard open-file limit {hard} is below what this test needs")
    r, err = _probe(1500, soft=512)
    assert r["limit"] == 1500 + SPARE_FDS and r["room"] == 1500 + SPARE_FDS
    assert r["after"] >= 1500 + SPARE_FDS
    assert "WARNING" not in err


def test_a_hard_limit_too_low_gives_what_it_allows_and_says_so():
    r, err = _probe(1000, soft=300, hard=300)
    assert r["limit"] == 300 and r["room"] == 300
    assert r["after"] >= 300 and r["same_fds"]
    assert "leaves room for 44 sockets, not 1000" in err


def test_fd_table_size_reads_this_process():
    size = fd_table_size()
    assert size is not None and size >= 64 and size & (size - 1) == 0  # a power of two
