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
def test_manage_py_demo_syncs_sample_users_through_the_emulator_and_checks(tmp_path):
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
    assert run("migrate", "--no-input").returncode == 0
    result = run("demo", "--no-serve", "--users", "40")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Started the local Autumn emulator" in out
    assert "autumn_sync push in" in out and "created 40" in out
    assert "In sync: 40." in out and "Everything is in sync." in out
    assert "user admin, password " in out
    assert (tmp_path / "emulator.json").exists()
    again = run("demo", "--no-serve", "--users", "40")  # idempotent; the data file kept the customers
    assert again.returncode == 0, again.stderr
    assert "0 created, 40 already there." in again.stdout
    assert "created 0, updated 0, unchanged 41" in again.stdout  # the samples and the admin
    assert "am_sk_" not in result.stdout + result.stderr
