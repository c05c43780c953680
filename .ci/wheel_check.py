"""Install the built wheel into a fresh virtual environment and run a
minimal project's `check` and `migrate` against it, so a packaging mistake
(a missing template, migration or py.typed) cannot land."""

import subprocess
import sys
import tempfile
import venv
import zipfile
from pathlib import Path

REQUIRED = [
    "autumn_django/py.typed",
    "autumn_django/migrations/0001_initial.py",
    "autumn_django/templates/admin/autumn_django/remotecustomer/change_list.html",
    "autumn_django/templates/admin/autumn_django/remotecustomer/detail.html",
    "autumn_django/templates/admin/autumn_django/remotecustomer/delete_confirmation.html",
    "autumn_django/pytest_plugin.py",
]

PROJECT = '''
import django
from django.conf import settings
from django.core.management import call_command

settings.configure(
    SECRET_KEY="wheel-check",
    INSTALLED_APPS=["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                    "django.contrib.sessions", "django.contrib.messages", "autumn_django"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
                "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                            "django.contrib.auth.context_processors.auth",
                            "django.contrib.messages.context_processors.messages"]}}],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware"],
    AUTUMN={"SECRET_KEY": "am_sk_test_" + "wheel".ljust(42, "0")},
)
django.setup()
import autumn_django, autumn_django.admin
assert "site-packages" in autumn_django.__file__, autumn_django.__file__
call_command("check", fail_level="WARNING")
call_command("migrate", verbosity=0)
from django.template.loader import get_template
get_template("admin/autumn_django/remotecustomer/change_list.html")
print("wheel", autumn_django.__version__, "installs, checks and migrates")
'''


def main(dist: str) -> None:
    wheels = sorted(Path(dist).glob("autumn_django-*.whl"))
    sdists = sorted(Path(dist).glob("autumn_django-*.tar.gz"))
    if not wheels or not sdists:
        sys.exit(f"expected a wheel and an sdist in {dist}")
    names = set(zipfile.ZipFile(wheels[-1]).namelist())
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        sys.exit(f"the wheel lacks: {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as scratch:
        venv.create(scratch, with_pip=True)
        python = str(Path(scratch) / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheels[-1])], check=True)
        subprocess.run([python, "-c", PROJECT], check=True, cwd=scratch)
    print(f"{wheels[-1].name} and {sdists[-1].name}: complete")


if __name__ == "__main__":
    main(sys.argv[1])
