"""``ivr demo``, the README's main job: one booking call from nothing, from anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from esl_app.sim.demo import EXAMPLE_TENANTS


def test_the_packaged_example_clinics_are_the_repository_ones(repo_root: Path):
    assert EXAMPLE_TENANTS.read_text() == (repo_root / "tenants.yaml").read_text()


def test_demo_runs_outside_the_repository(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "esl_app", "demo", "--time-scale", "0.03"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "clinics    the built-in examples (no tenants.yaml here)"
    assert any(line.startswith("outcome    booked") for line in lines), proc.stdout
    stored = next(line for line in lines if line.startswith("stored"))
    assert "status booked" in stored
    assert (tmp_path / "var" / "demo.db").is_file()


def test_demo_with_a_named_missing_file_fails(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "esl_app", "--tenants", "nope.yaml", "demo"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: nope.yaml: file not found"
