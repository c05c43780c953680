"""Settings for autumn-django's own test suite."""

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "autumn_django",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Built, not written out: a committed full-length key would look like a leak.
AUTUMN = {
    "SECRET_KEY": "am_sk_test_" + "suite".ljust(42, "0"),
    "BASE_URL": "https://api.useautumn.com",
}

# Fast hashing: the suite creates many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
