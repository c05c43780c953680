"""The README's first quick-start command runs the example project's main
job; this runs that job the same way, against a free port."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.http
def test_manage_py_demo_creates_and_lists_customers_through_the_emulator(tmp_path):
    env = {
        **os.environ,
        "AUTUMN_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "AUTUMN_EMULATOR_DATA": str(tmp_path / "emulator.json"),
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
    }
    env.pop("AUTUMN_SECRET_KEY", None)
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run("check").returncode == 0
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert "Started the Autumn emulator" in result.stdout
    assert "get_or_create demo-1: Ada Lovelace <ada@example.com>" in result.stdout
    assert "3 customers listed from" in result.stdout
    assert (tmp_path / "emulator.json").exists()
    assert "am_sk_" not in result.stdout + result.stderr
