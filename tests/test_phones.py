"""One phone-number form for reminders, do-not-call and the emulator's callees."""

from __future__ import annotations

import subprocess
import sys

import pytest

from esl_app.scheduling.phones import phone_key


@pytest.mark.parametrize("number, key", [
    ("+1 (555) 010-2001", "5550102001"), ("15550102001", "5550102001"),
    ("555.010.2001", "5550102001"), ("+44 20 7946 0958", "442079460958"),
    ("1001", "1001"), ("", ""), (None, ""), ("call me", ""),
])
def test_phone_key(number, key):
    assert phone_key(number) == key


def test_the_emulator_compares_numbers_without_the_database(tmp_path):
    code = ("import sys\n"
            "import esl_app.sim.emulator.callees\n"
            "heavy = ('esl_app.db', 'esl_app.reminders', 'peewee')\n"
            "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
