"""The test matrix: the suite on each supported Django, on this Python.

`make test` runs it on the project's own venv (Django 5.2, the newest that
installs on Python 3.11); `nox -s "tests(django='4.2')"` on Django 4.2.
django-tasks-db needs Django 5.2, so on 4.2 the real-server tests skip and
say so.
"""

import nox

nox.options.default_venv_backend = "venv"


@nox.session
@nox.parametrize("django", ["4.2", "5.2"])
def tests(session: nox.Session, django: str) -> None:
    extras = "test,browser,example" if django == "4.2" else "test,services,browser,example"
    session.install("-e", f".[{extras}]", f"django~={django}.0")
    session.run("python", "-c", "import django; print('Django', django.get_version())")
    session.run("python", "-m", "pytest", "-q", *session.posargs)
