"""The README's quick start: ``make demo`` runs the example project's main
job; these run that job the same way, against free ports and a database of
their own, and then run the commands it prints, exactly as printed, in a
shell in the same directory (what "in another terminal" means). The
Makefile's set-up is checked to be quiet unless it fails."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo_env(tmp_path):
    """The environment of a terminal running the demo: its own database,
    emulator data, password file and emulator port."""
    env = {
        **os.environ,
        "AUTUMN_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "AUTUMN_EMULATOR_DATA": str(tmp_path / "emulator.json"),
        "DEMO_ADMIN_PASSWORD_FILE": str(tmp_path / "demo-admin-password"),
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("AUTUMN_SECRET_KEY", "AUTUMN_WEBHOOK_SECRET", "MAKELEVEL", "MAKEFLAGS"):
        env.pop(name, None)
    return env


def manage(env, *args):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def printed(out, label):
    """The command printed after ``label`` on one line of ``out``."""
    match = re.search(rf"{re.escape(label)}\s*(.+)$", out, re.MULTILINE)
    assert match, f"no {label!r} in:\n{out}"
    return match.group(1).strip()


class Serving:
    """``manage.py demo`` (or a printed command that runs it) serving in the
    background, its output read line by line; Ctrl-C (SIGINT) stops it."""

    def __init__(self, command, env, *, shell=False):
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, shell=shell, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text, timeout=60):
        while text not in self.out:
            line = self.lines.get(timeout=timeout)
            assert line is not None, f"ended before {text!r}:\n{self.out}"
            self.out += line
        return self.out

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Ctrl-C, to the shell and the demo alike
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.mark.http
def test_manage_py_demo_syncs_sample_users_through_the_emulator_and_checks(demo_env, tmp_path):
    assert manage(demo_env, "check").returncode == 0
    assert manage(demo_env, "migrate", "--no-input").returncode == 0
    result = manage(demo_env, "demo", "--no-serve", "--users", "40")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Started the local Autumn emulator" in out
    assert "Users: 40 created, 0 already there." in out
    assert "Teams: 4 created (an owner and 3 more members each), 0 already there." in out  # one per 10 users
    assert "autumn_sync push in" in out and "created 44" in out  # the users and the teams
    assert "In sync: 44." in out and "Everything is in sync." in out
    assert (tmp_path / "emulator.json").exists()
    again = manage(demo_env, "demo", "--no-serve", "--users", "40")  # idempotent; the data file kept them
    assert again.returncode == 0, again.stderr
    assert "Users: 0 created, 40 already there." in again.stdout
    assert "Teams: 0 created, 4 already there." in again.stdout
    assert "created 0, updated 0, unchanged 45" in again.stdout  # the samples, their teams and the admin
    assert "am_sk_" not in result.stdout + result.stderr


@pytest.mark.http
def test_the_admin_login_is_printed_at_step_4_and_the_same_on_every_run(demo_env, tmp_path):
    assert manage(demo_env, "migrate", "--no-input").returncode == 0
    first = manage(demo_env, "demo", "--no-serve", "--users", "3")
    second = manage(demo_env, "demo", "--no-serve", "--users", "3")
    assert first.returncode == 0 == second.returncode, first.stderr + second.stderr
    step = re.search(r"^4\. An admin login\n(User admin, password (\S+))\n(.+)$", first.stdout, re.MULTILINE)
    assert step, first.stdout
    password = step.group(2)
    assert f"User admin, password {password}\n" in second.stdout  # kept for the demo's database
    kept = tmp_path / "demo-admin-password"
    assert f"it is kept in {kept}" in step.group(3)
    assert kept.read_text().strip() == password and stat.S_IMODE(kept.stat().st_mode) == 0o600
    script = (
        "from django.contrib.auth.models import User; "
        f"print(User.objects.get(username='admin').check_password({password!r}))"
    )
    changed = manage(demo_env, "shell", "-c", script)
    assert changed.stdout.strip().splitlines()[-1] == "True", changed.stdout + changed.stderr


@pytest.mark.http
def test_without_serving_it_says_nothing_is_served_and_prints_a_command_that_serves(demo_env):
    assert manage(demo_env, "migrate", "--no-input").returncode == 0
    port = free_port()
    result = manage(demo_env, "demo", "--no-serve", "--users", "3", "--addrport", f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Ready" not in out and "while this command runs" not in out and "until Ctrl-C stops" not in out
    assert "Done. Nothing is served, and the emulator has stopped." in out
    assert "Plans come by webhook: once the site\n  is up, the emulator attaches pro to admin" in out
    command = printed(out, "To look around, run:")
    assert command.startswith(
        f"{Path(sys.executable).relative_to(ROOT)} manage.py demo"
    ) or command.startswith(sys.executable)
    served = Serving(command, demo_env, shell=True)  # as printed
    try:
        served.wait_for("Quit the server with")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200 and b"autumn-django example" in response.read()
    finally:
        served.stop()


@pytest.mark.http
def test_while_serving_the_printed_check_command_works_in_another_terminal(demo_env):
    assert manage(demo_env, "migrate", "--no-input").returncode == 0
    port = free_port()
    served = Serving(
        [
            sys.executable,
            "manage.py",
            "demo",
            "--users",
            "5",
            "--teams",
            "1",
            "--addrport",
            f"127.0.0.1:{port}",
        ],
        demo_env,
    )
    try:
        out = served.wait_for("Quit the server with")
        assert f"Ready: serving http://127.0.0.1:{port}/ until Ctrl-C." in out
        assert "Autumn customers         the customers your Autumn account holds" in out
        command = printed(out, "in another terminal here:")
        assert command.endswith("manage.py autumn_sync --check") and not command.startswith("python ")
        check = subprocess.run(command, shell=True, cwd=ROOT, env=demo_env, capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert (
            "In sync: 7." in check.stdout
        )  # the samples, the team and the admin, through the served emulator
        for path in ("/", "/admin/login/"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                assert response.status == 200
    finally:
        served.stop()
    assert served.process.returncode is not None


def log_in(site, password):
    """A browser's session on the demo's site, logged in as the admin."""
    browser = requests.Session()
    browser.trust_env = False
    form = browser.get(f"{site}/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    landed = browser.post(
        f"{site}/login/",
        data={"username": "admin", "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{site}/login/"},
        timeout=10,
    )
    assert landed.url == f"{site}/billing/", landed.url  # LOGIN_REDIRECT_URL
    return browser


@pytest.mark.http
def test_served_the_emulator_attaches_pro_to_the_admin_and_its_webhook_reaches_the_billing_page(demo_env):
    """Once the site is up, the demo attaches pro to the admin at the
    emulator, which signs billing.updated with the site's default secret and
    delivers it to /autumn/webhooks/; the printed command to attach a plan
    by hand does the same, run as printed in another terminal."""
    assert manage(demo_env, "migrate", "--no-input").returncode == 0
    port = free_port()
    site = f"http://127.0.0.1:{port}"
    demo = ["demo", "--users", "5", "--teams", "1", "--addrport", f"127.0.0.1:{port}"]
    served = Serving([sys.executable, "manage.py", *demo], demo_env)
    try:
        out = served.wait_for("\n  See it: ")
        assert f"its webhooks go to\n          {site}/autumn/webhooks/, signed with" in out
        assert f"the Billing page of admin ({site}/billing/)" in out
        arrived = (
            r"^Attached pro to admin at the emulator: its webhook reached the site and the mirror shows pro "
        )
        assert re.search(arrived + r"\d+ ms later\.$", out, re.MULTILINE), out
        assert out.index("Quit the server with") < out.index("Attached pro to admin")  # once the site was up
        password = re.search(r"^User admin, password (\S+)$", out, re.MULTILINE).group(1)
        browser = log_in(site, password)
        page = browser.get(f"{site}/billing/", timeout=10).text
        assert 'data-plan="pro"' in page and 'data-plan="credits"' not in page
        command = printed(out, "To attach a plan yourself, in another terminal:")
        assert command.endswith("manage.py attach_plan admin credits") and not command.startswith("python ")
        attach = subprocess.run(command, shell=True, cwd=ROOT, env=demo_env, capture_output=True, text=True,
                                timeout=60)  # fmt: skip
        assert attach.returncode == 0, attach.stdout + attach.stderr
        assert attach.stdout.startswith("Attached credits to admin (Autumn customer ")
        assert "Autumn's webhook brought it to the mirror in " in attach.stdout
        page = browser.get(f"{site}/billing/", timeout=10).text
        assert 'data-plan="pro"' in page and 'data-plan="credits"' in page
    finally:
        served.stop()
    assert "am_sk_" not in served.out and "whsec_" not in served.out


@pytest.mark.http
def test_the_printed_command_keeps_the_sample_teams_asked_for(demo_env):
    assert manage(demo_env, "migrate", "--no-input").returncode == 0
    result = manage(demo_env, "demo", "--no-serve", "--users", "3", "--teams", "2")
    assert result.returncode == 0, result.stderr
    assert "Teams: 2 created (an owner and 2 more members each), 0 already there." in result.stdout
    assert "In sync: 5." in result.stdout  # the samples and the teams (the admin comes after the check)
    assert printed(result.stdout, "To look around, run:").endswith("manage.py demo --users=3 --teams=2")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_run_by_make_it_prints_the_make_target(demo_env):
    assert manage(demo_env, "migrate", "--no-input").returncode == 0
    result = manage({**demo_env, "MAKELEVEL": "1"}, "demo", "--no-serve", "--users", "3")
    assert result.returncode == 0, result.stderr
    assert printed(result.stdout, "To look around, run:") == "make demo DEMO_ARGS=--users=3"
    dry = subprocess.run(
        ["make", "-n", "demo", "DEMO_ARGS=--users=3"], cwd=ROOT, capture_output=True, text=True
    )
    assert dry.returncode == 0 and "manage.py demo --users=3" in dry.stdout


# --- the Makefile's set-up ----------------------------------------------------------------

FAKE_PIP = """#!/bin/sh
echo "WARNING: Location is ignored (pip noise on stdout)"
echo "BuildBackendWarning (noise on stderr)" >&2
exit ${FAKE_PIP_STATUS:-0}
"""
#: python3 for the Makefile's set-up: ``-m venv DIR`` makes DIR/bin/python,
#: a pip that writes warnings and exits with $FAKE_PIP_STATUS.
FAKE_PYTHON = """#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "%s" "$3/bin/python" && chmod +x "$3/bin/python"
  exit 0
fi
exec %s "$@"
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("pip_status", [0, 1])
def test_the_set_up_is_quiet_unless_it_fails(tmp_path, pip_status):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "fake-pip").write_text(FAKE_PIP)
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON % (tmp_path / "fake-pip", sys.executable))
    fake.chmod(0o755)
    env = {**os.environ, "FAKE_PIP_STATUS": str(pip_status)}
    for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):
        env.pop(name, None)
    run = subprocess.run(
        ["make", "--no-print-directory", ".venv/.installed-stamp", f"PYTHON={fake}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    shown = run.stdout + run.stderr
    if pip_status == 0:
        assert run.returncode == 0, shown
        assert shown == "Setting up .venv: a minute or so the first time (log: .venv/setup.log).\n"
        assert "pip noise" in (tmp_path / ".venv/setup.log").read_text()
    else:
        assert run.returncode != 0
        assert "pip noise" in shown and "noise on stderr" in shown  # the log, to see why
        assert "setting up .venv failed" in shown and ".venv/setup.log" in shown
        assert not (tmp_path / ".venv/.installed-stamp").exists()  # the next make tries again
