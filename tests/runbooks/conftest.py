"""Runbook tests: the helpers live beside this file (runbook_lib.py, runbook_checks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
