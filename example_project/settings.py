"""Settings of the example site, read from the environment (or a .env file
beside manage.py) with django-environ. With nothing set, it runs on SQLite
against the local Autumn emulator: no account needed."""

import base64
from pathlib import Path
from urllib.parse import urlsplit

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="example-project-insecure-key-for-local-use-only")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "autumn_django",
    "example_project",
]
# In production add a worker backend here (see docs/sync.md); the default,
# ImmediateBackend, syncs right after each commit in the web process.

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "billing"
LOGOUT_REDIRECT_URL = "home"

# The emulator's well-formed but obviously fake sandbox key; set
# AUTUMN_SECRET_KEY (and AUTUMN_BASE_URL=https://api.useautumn.com) for the
# real service.
EMULATOR_SECRET_KEY = "am_sk_test_" + "emulator".ljust(42, "0")
EMULATOR_URL = "http://127.0.0.1:8787"
# Where `manage.py demo` keeps the emulator's customers between runs.
EMULATOR_DATA_FILE = env.path("AUTUMN_EMULATOR_DATA", default=str(VAR_DIR / "emulator.json"))
# Where `manage.py demo` keeps the admin's password, so it is the same on
# every run (delete the file for a new one).
DEMO_ADMIN_PASSWORD_FILE = env.path("DEMO_ADMIN_PASSWORD_FILE", default=str(VAR_DIR / "demo-admin-password"))

# The emulator's webhook signing secret, as fake as its key: `manage.py demo`
# has the emulator sign its events with it, and the site accepts them at
# /autumn/webhooks/. It is the default only while Autumn is a local address
# (the emulator); for the real service set AUTUMN_WEBHOOK_SECRET to the
# whsec_... secret Autumn's dashboard shows for the endpoint (two,
# comma-separated, during a rotation).
EMULATOR_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"emulator".ljust(24, b"0")).decode()
AUTUMN_BASE_URL = env("AUTUMN_BASE_URL", default=EMULATOR_URL)
AUTUMN_IS_LOCAL = urlsplit(AUTUMN_BASE_URL).hostname in ("127.0.0.1", "localhost")

AUTUMN = {
    "SECRET_KEY": env("AUTUMN_SECRET_KEY", default=EMULATOR_SECRET_KEY),
    "BASE_URL": AUTUMN_BASE_URL,
    "API_VERSION": env("AUTUMN_API_VERSION", default="2.1"),
    "WEBHOOK_SECRETS": env.list(
        "AUTUMN_WEBHOOK_SECRET", default=[EMULATOR_WEBHOOK_SECRET] if AUTUMN_IS_LOCAL else []
    ),
    # Users and teams are both Autumn customers (teams: example_project/billing.py).
    "CUSTOMER_SOURCES": ["autumn_django.sources.UserSource", "example_project.billing.TeamSource"],
    # With several processes (a web server and workers), one Redis holds the
    # rate budget they share; unset, each process paces itself.
    "RATE_LIMIT_STORE": env("AUTUMN_RATE_LIMIT_STORE", default=None),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "autumn_django": {"handlers": ["console"], "level": env("AUTUMN_LOG_LEVEL", default="WARNING")}
    },
}
