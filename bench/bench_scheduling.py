"""Slot search and booking latency on SQLite with a year of slots for 100 tenants × 10 doctors.

    .venv/bin/python bench/bench_scheduling.py [--tenants 100] [--doctors 10] [--days 365]

Targets: search p99 ≤ 5 ms, book p99 ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta

import yaml

from esl_app.config.tenants import parse_tenants
from esl_app.db import checkpoint_forever, init_db
from esl_app.db.models import Slot
from esl_app.scheduling import service
from esl_app.scheduling.provisioning import import_tenants
from esl_app.scheduling.slots import generate_slots

ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
         "Europe/London", "Europe/Berlin"]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--doctors", type=int, default=10)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--searches", type=int, default=3000)
    ap.add_argument("--books", type=int, default=1000)
    ap.add_argument("--db", default=None)
    args = ap.parse_args()
    path = args.db or os.path.join(tempfile.mkdtemp(prefix="ivr-bench-"), "bench.db")
    reuse = os.path.exists(path)
    init_db(f"sqlite:///{path}")
    tenants = [{
        "id": f"t{i:03d}", "name": f"Clinic {i}", "dids": [f"{7000 + i}"],
        "timezone": ZONES[i % len(ZONES)],
        "hours": {"mon-fri": "08:00-17:00", "sat": "09:00-12:00"},
        "slot_minutes": 30,
        "doctors": [{"id": f"d{j}", "name": f"Dr. Number {j}"} for j in range(args.doctors)],
    } for i in range(args.tenants)]
    tset = parse_tenants(yaml.safe_dump({"tenants": tenants}))
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    if reuse:  # --db of an earlier run: measure again without regenerating
        total = Slot.select().count()
        print(f"reusing {path}: {total} slots")
    else:
        import_tenants(tset)
        total = sum(generate_slots(t.id, args.days, now=now) for t in tset)
        print(f"setup: {total} slots for {args.tenants} tenants x {args.doctors} doctors x "
              f"{args.days} days in {time.perf_counter() - t0:.1f} s "
              f"(db {os.path.getsize(path) / 1e6:.0f} MB)")
        assert Slot.select().count() == total
    # as `ivr serve` does: WAL checkpoints in a background OS thread, not in a booking
    threading.Thread(target=checkpoint_forever, args=(path, 1.0), daemon=True).start()
    for t in tset:  # warm the per-process tenant cache, as a running server has it
        service.search_slots(t.id, now=now, limit=1)

    rng = random.Random(7)
    ids = [t.id for t in tset]
    parts = [None, "morning", "afternoon"]
    search_ms: list[float] = []
    for _ in range(args.searches):
        tid = rng.choice(ids)
        kw = {}
        r = rng.random()
        if r < 0.4:
            kw["date"] = (now + timedelta(days=rng.randint(1, args.days - 2))).date()
        if rng.random() < 0.5:
            kw["doctor"] = f"d{rng.randrange(args.doctors)}"
        kw["part_of_day"] = rng.choice(parts)
        s = time.perf_counter()
        service.search_slots(tid, now=now, **kw)
        search_ms.append((time.perf_counter() - s) * 1000)

    book_ms: list[float] = []
    for i in range(args.books):
        tid = rng.choice(ids)
        day = (now + timedelta(days=rng.randint(1, args.days - 2))).date()
        found = service.search_slots(tid, date=day, limit=3, now=now)
        if not found:
            continue
        s = time.perf_counter()
        service.book(tid, found[0].slot_id, patient_name=f"Patient {i}", phone="5550000000",
                     now=now)
        book_ms.append((time.perf_counter() - s) * 1000)

    for name, vals, target in (("search", search_ms, 5), ("book", book_ms, 10)):
        print(f"{name}: n={len(vals)} p50={statistics.median(vals):.2f} ms "
              f"p95={pct(vals, 95):.2f} ms p99={pct(vals, 99):.2f} ms max={max(vals):.2f} ms "
              f"(target p99 <= {target} ms)")


if __name__ == "__main__":
    main()
