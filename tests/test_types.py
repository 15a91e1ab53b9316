"""issue 20: the project type-checks — mypy over every module but the tests (mypy.ini says which
and why: docs/DECISIONS.md), with 0 errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_mypy_finds_no_error():
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "mypy.ini")], cwd=ROOT,
                       capture_output=True, text=True, timeout=280)
    assert r.returncode == 0 and "Success: no issues found" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]
