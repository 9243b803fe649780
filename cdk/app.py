#!/usr/bin/env python3
"""Entry point for the ``cdk`` CLI (``"app": "python3 app.py"`` in cdk.json).

Run from ``cdk/`` with the ivr package installed (``pip install -e .[cdk]``):
``cdk synth`` or ``cdk deploy --all -c apiUrl=https://… -c tokensSecret=…``.
"""

import os
import sys
from pathlib import Path

# Make ivr_cdk (beside this file) and esl_app (the repo root) importable, wherever the
# CLI was started from.
_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE.parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from ivr_cdk import ConfigError, build_app  # noqa: E402

if __name__ == "__main__":
    # Under the CLI, CDK_OUTDIR is set; run alone, write beside cdk.json like the CLI.
    try:
        built = build_app(outdir=os.environ.get("CDK_OUTDIR") or str(_HERE / "cdk.out"))
    except ConfigError as err:
        sys.exit(f"ivr cdk: {err}")  # one line naming the key, not a traceback
    built.app.synth()
