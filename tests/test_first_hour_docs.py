"""The first hour with the docs: what they say to paste works where it is
pasted, what they say about keys is what the emulator and the client do,
the package metadata builds without warnings, and the README shows the
demo's output as a person sees it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autumn_django.client import AutumnClient
from autumn_django.emulator import Emulator
from autumn_django.exceptions import AutumnImproperlyConfigured
from autumn_django.testing import make_secret_key

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
KEY_RULE = "am_sk_test_ or am_sk_live_ followed by 42 letters and digits"


def code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, re.DOTALL)


# --- docs/installation.md -----------------------------------------------------------------


def test_the_installation_snippet_works_in_the_settings_startproject_makes(tmp_path):
    run = lambda *args, **env: subprocess.run(  # noqa: E731
        [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "mysite.settings", **env},
    )  # fmt: skip
    assert run("-m", "django", "startproject", "mysite", ".").returncode == 0
    settings = tmp_path / "mysite" / "settings.py"
    made = settings.read_text()
    assert "import os\n" not in made  # why the snippet imports it
    snippet = next(block for block in code_blocks((DOCS / "installation.md").read_text(), "python"))
    assert snippet.startswith("# settings.py\nimport os")
    # The snippet's "..." stands for the apps already there (less the admin, which it names again).
    snippet = snippet.replace(
        "    ...,\n", "    *[app for app in INSTALLED_APPS if app != 'django.contrib.admin'],\n"
    )
    settings.write_text(made + "\n" + snippet)
    checked = run("manage.py", "check", AUTUMN_SECRET_KEY=make_secret_key())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    missing = run("manage.py", "check")  # no key in the environment: stops at once, by name
    assert missing.returncode != 0 and "KeyError: 'AUTUMN_SECRET_KEY'" in missing.stderr


# --- keys: docs/emulator.md, the emulator, the client ---------------------------------------------


def emulator_error(key: str) -> tuple[int, str, str]:
    response = Emulator().handle(
        "POST",
        "/v1/customers.list",
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "x-api-version": "2.1"},
        b"{}",
    )
    return response.status, response.json.get("code"), response.json.get("message")


def test_the_emulator_doc_states_the_42_character_rule_and_the_emulator_keeps_it():
    doc = " ".join((DOCS / "emulator.md").read_text().split())
    assert "followed by exactly 42 letters and digits" in doc and "any am_sk_test_ key" not in doc
    status, code, message = emulator_error("am_sk_test_x")
    assert (status, code) == (401, "invalid_secret_key")
    assert message == f"Invalid secret key: a valid one is {KEY_RULE}."
    assert f'"{message}"' in doc  # the doc quotes it as it is
    assert emulator_error("am_sk_test_" + "a" * 42)[0] == 200
    assert emulator_error("am_sk_test_" + "a" * 41)[0] == 401


@pytest.mark.parametrize("key", ["am_sk_test_x", "am_sk_live_QZq7tooShort", "am_sk_test_" + "Qz" * 21 + "Q"])
def test_no_invalid_key_message_shows_the_key(key):
    """Neither the emulator's answer nor the client's error shows any of the
    key past its prefix; both say what a valid one looks like."""
    shown = key if key == "am_sk_test_x" else key[11:15]
    message = emulator_error(key)[2]
    assert shown not in message and KEY_RULE in message
    with pytest.raises(AutumnImproperlyConfigured) as raised:
        AutumnClient(key)
    assert shown not in str(raised.value) and "42 letters and digits" in str(raised.value)


def test_a_well_formed_key_the_emulator_was_not_given_is_told_apart():
    emulator = Emulator(secret_keys=[make_secret_key()])
    response = emulator.handle(
        "POST",
        "/v1/customers.list",
        {"Authorization": f"Bearer {make_secret_key()}", "x-api-version": "2.1"},
        b"{}",
    )
    assert response.json["message"] == (
        "Invalid secret key: well formed, but not one of the keys this emulator was given."
    )


# --- the package's metadata ------------------------------------------------------------------


def test_the_license_is_an_spdx_expression_without_a_license_classifier():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    # SPDX expressions need setuptools 77; older ones would refuse the string.
    assert pyproject["build-system"]["requires"] == ["setuptools>=77"]


# --- the README's quick start ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_output() -> str:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start") : readme.index("## Using it in your site")]
    commands, output = code_blocks(quick_start, "sh")[0], code_blocks(quick_start, "text")[0]
    assert commands.splitlines()[0].startswith("make demo ") and commands.splitlines()[1].startswith(
        "make test "
    )
    return output


def masked(text: str) -> list[str]:
    """Lines with what changes from run to run masked: numbers (counts of
    the set-up, timings, rates, dates) and the password."""
    text = re.sub(r"(password) \S+", r"\1 PASSWORD", text)
    return [re.sub(r"\d+(\.\d+)?", "N", line).rstrip() for line in text.splitlines()]


@pytest.mark.http
def test_the_readme_shows_the_demos_output_as_it_is(tmp_path):
    """The README's output of ``make demo-no-serve`` on a fresh clone, from
    the emulator's first line on, is what the demo prints today (numbers and
    the password aside): run by make, with the data in var/."""
    (tmp_path / "var").mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'db.sqlite3'}",
        "AUTUMN_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "AUTUMN_EMULATOR_DATA": "var/emulator.json",
        "DEMO_ADMIN_PASSWORD_FILE": "var/demo-admin-password",
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "PYTHONPATH": str(ROOT),
        "MAKELEVEL": "1",
    }
    env.pop("AUTUMN_SECRET_KEY", None)
    manage = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=tmp_path, env=env, capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert manage("migrate", "--no-input", "--verbosity", "0").returncode == 0
    run = manage("demo", "--no-serve")
    assert run.returncode == 0, run.stderr
    shown = readme_output()
    start = shown.index("Started the local Autumn emulator")
    assert masked(shown[start:]) == masked(run.stdout)
    assert masked(shown[:start]) == [
        "$ make demo-no-serve",
        "Setting up .venv: a minute or so the first time (log: .venv/setup.log).",
    ]


def test_every_screenshot_the_admin_doc_shows_is_there():
    """docs/admin.md's images, taken by tests/test_browser.py at both widths."""
    doc = (DOCS / "admin.md").read_text()
    images = set(re.findall(r"\(images/([\w-]+\.png)\)", doc))
    pages = {"mirror-list", "mirror-page", "remote-list", "remote-detail", "remote-delete"}
    assert images == {f"admin-{page}{width}.png" for page in pages for width in ("", "-390")}
    assert all((DOCS / "images" / image).stat().st_size > 10_000 for image in images)
