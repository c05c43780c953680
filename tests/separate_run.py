"""Some tests need settings fixed for a whole process (another user model,
another database); they run in a pytest of their own, started from here."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(settings_module: str, *args: str, expected_passed: int | None) -> None:
    """Run pytest with ``settings_module`` and assert that it passed
    ``expected_passed`` tests (None: every test it ran, none skipped),
    showing its output when it did not."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ds", settings_module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    if expected_passed is None:
        assert " passed" in result.stdout and "skipped" not in result.stdout, output
    else:
        assert f"{expected_passed} passed" in result.stdout, output
