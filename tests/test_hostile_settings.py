"""Hostile and careless values in ``settings.AUTUMN``: each is reported by the
system check (naming the key, never showing the secret key or a URL's
credentials), and the check itself never raises, whatever the setting holds."""

import math

import pytest
from django.core.checks import CheckMessage, Error, Warning, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from autumn_django import conf, contract
from autumn_django.checks import check_settings
from autumn_django.client import AutumnClient
from autumn_django.exceptions import AutumnImproperlyConfigured
from autumn_django.testing import make_secret_key

KEY = make_secret_key()


def autumn(**values):
    return override_settings(AUTUMN={"SECRET_KEY": KEY, **values})


def errors_for(setting, messages):
    return [m for m in messages if m.id == "autumn_django.E001" and f'AUTUMN["{setting}"]' in m.msg]


def pieces(secret, size=6):
    """Every run of ``size`` characters of the key's random part."""
    body = secret.strip()[len("am_sk_test_") :]
    return {body[i : i + size] for i in range(len(body) - size + 1)}


def assert_not_shown(secret, messages):
    for message in messages:
        text = f"{message.msg} {message.hint or ''}"
        assert secret.strip() not in text
        for piece in pieces(secret):
            assert piece not in text, f"part of the key shown in {text!r}"


# --- the secret key -------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [KEY + "\n", KEY + "\r\n", KEY + " ", " " + KEY, "\t" + KEY + "\n", KEY + "\n\n"],
    ids=["newline", "crlf", "space", "leading-space", "tab-and-newline", "two-newlines"],
)
def test_a_secret_key_with_whitespace_around_it_is_an_error_that_says_strip(key):
    with override_settings(AUTUMN={"SECRET_KEY": key}):
        messages = check_settings()
        with pytest.raises(AutumnImproperlyConfigured) as caught:
            conf.load()
    [error] = errors_for("SECRET_KEY", messages)
    assert isinstance(error, Error)
    assert "whitespace" in error.msg
    assert ".strip()" in (error.hint or "") and "read_text()" in error.hint
    assert_not_shown(key, messages)
    assert key.strip() not in str(caught.value)


def test_the_client_refuses_a_key_with_a_trailing_newline_without_showing_it():
    with pytest.raises(AutumnImproperlyConfigured) as caught:
        AutumnClient(KEY + "\n")
    assert "whitespace" in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


@pytest.mark.parametrize(
    "key",
    [
        KEY[:-1] + "\n",  # right length, newline inside the pattern's reach
        KEY + "\x00",
        KEY + "\u200b",  # zero-width space: not whitespace, still not a key
        KEY[:20] + " " + KEY[20:],
        KEY + "ab",
        b"am_sk_test_" + b"a" * 42,
    ],
    ids=["newline-for-last", "nul", "zero-width", "inner-space", "too-long", "bytes"],
)
def test_any_other_malformed_key_is_an_error_that_does_not_show_it(key):
    with override_settings(AUTUMN={"SECRET_KEY": key}):
        messages = check_settings()
    assert errors_for("SECRET_KEY", messages)
    shown = key.decode() if isinstance(key, bytes) else key
    assert_not_shown(shown, messages)


def test_the_key_is_not_echoed_even_when_given_for_another_setting():
    with autumn(API_VERSION=KEY, TASK_QUEUE=KEY + "\n", BASE_URL=KEY):
        messages = check_settings()
    assert errors_for("API_VERSION", messages) and errors_for("BASE_URL", messages)
    assert_not_shown(KEY, messages)


# --- patterns are matched in full ---------------------------------------------------


def test_every_contract_pattern_refuses_a_trailing_newline():
    assert contract.SECRET_KEY_RE.match(KEY + "\n") is None  # the emulator calls .match()
    assert contract.customer_id_problem("user_42\n") is not None
    assert contract.customer_id_problem("user_42") is None
    assert not contract.is_valid_email("jane@example.com\n")
    assert contract.is_valid_email("jane@example.com")
    assert contract.parse_api_version("2.1\n") is None
    assert contract.parse_api_version(" 2.1") is None
    assert contract.parse_api_version("2.1") == contract.ApiVersion(2, 1)


def test_api_versions_are_ascii_digits_of_a_sane_length():
    assert contract.parse_api_version("\u0662.\u0661") is None  # Arabic-Indic 2.1
    assert contract.parse_api_version("2.1." + "9" * 5000) is None  # no int() blow-up


# --- API_VERSION, BASE_URL --------------------------------------------------------


@pytest.mark.parametrize("version", [" 2.1", "2.1 ", "2.1\n", "\t2.3", "2026-05-13\n"])
def test_an_api_version_with_whitespace_is_an_error(version):
    with autumn(API_VERSION=version):
        messages = check_settings()
        with pytest.raises(AutumnImproperlyConfigured, match=r'AUTUMN\["API_VERSION"\]'):
            conf.load()
    [error] = errors_for("API_VERSION", messages)
    assert "whitespace" in error.msg


@pytest.mark.parametrize(
    "url",
    [
        "https://api.useautumn.com\n",
        " https://api.useautumn.com",
        "https://api.useautumn.com/\r\n",
        "https://api.use autumn.com",
        "https://api\tuseautumn.com",
        "https://api.useautumn.com\x00",
        "https://api.useautumn.com\x7f",
        "http://[::1",
        "http://[::1]:8787\n",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
        "http://:8787",
        "https://api.useautumn.com#top",
        "https://api.useautumn.com?x=1",
        b"https://api.useautumn.com",
        "",
    ],
)
def test_a_base_url_that_cannot_work_is_an_error_and_the_check_does_not_crash(url):
    with autumn(BASE_URL=url):
        messages = check_settings()
        with pytest.raises(AutumnImproperlyConfigured, match=r'AUTUMN\["BASE_URL"\]'):
            conf.load()
    assert len(errors_for("BASE_URL", messages)) == 1


@pytest.mark.parametrize(
    "url",
    [
        "ftp://jane:s3cr3tpw@autumn.example.com",
        "https://jane:s3cr3tpw@autumn.example.com\n",
        "http://jane:s3cr3tpw@[::1",
        "https://jane:s3cr3tpw@autumn.example.com:notaport",
        "jane:s3cr3tpw@autumn.example.com",
    ],
)
def test_a_base_url_error_hides_its_credentials(url):
    with autumn(BASE_URL=url):
        messages = check_settings()
        with pytest.raises(AutumnImproperlyConfigured) as caught:
            conf.load()
    [error] = errors_for("BASE_URL", messages)
    for text in (error.msg, error.hint or "", str(caught.value)):
        assert "s3cr3tpw" not in text and "jane" not in text
    assert "***@" in error.msg


# --- numbers ------------------------------------------------------------------


INF, NAN = float("inf"), float("nan")
BAD_SECONDS = [INF, -INF, NAN, -1, -0.5, 0, 10**400, 1e300, True, "10"]


@pytest.mark.parametrize("setting", ["TIMEOUT", "ADMIN_TIMEOUT"])
@pytest.mark.parametrize(
    "value",
    [*BAD_SECONDS, (1, INF), (NAN, 1), (3, -1), (10**400, 5), [1, "2"], (1,), (1, 2, 3), {"connect": 1}],
    ids=repr,
)
def test_a_timeout_must_be_a_finite_positive_number_of_seconds(setting, value):
    with autumn(**{setting: value}):
        messages = check_settings()
        with pytest.raises(AutumnImproperlyConfigured, match=rf'AUTUMN\["{setting}"\]'):
            conf.load()
    assert len(errors_for(setting, messages)) == 1


@pytest.mark.parametrize("setting", ["RETRY_DELAY", "RETRY_MAX_DELAY"])
@pytest.mark.parametrize("value", BAD_SECONDS, ids=repr)
def test_a_retry_delay_must_be_a_finite_positive_number_of_seconds(setting, value):
    with autumn(**{setting: value}):
        messages = check_settings()
        with pytest.raises(AutumnImproperlyConfigured, match=rf'AUTUMN\["{setting}"\]'):
            conf.load()
    assert len(errors_for(setting, messages)) == 1


@pytest.mark.parametrize("rate", [INF, -INF, NAN, -1, 0, 10**400, True, "5"], ids=repr)
def test_a_rate_limit_must_be_a_finite_positive_number(rate):
    with autumn(RATE_LIMITS={"customers.update": rate}):
        messages = check_settings()
        with pytest.raises(AutumnImproperlyConfigured, match=r'AUTUMN\["RATE_LIMITS"\]'):
            conf.load()
    assert len(errors_for("RATE_LIMITS", messages)) == 1


def test_sane_numbers_still_pass():
    with autumn(
        TIMEOUT=(0.5, 60),
        ADMIN_TIMEOUT=2,
        RETRY_DELAY=1,
        RETRY_MAX_DELAY=24 * 3600,
        RATE_LIMITS={"customers.update": 0.5, "customers.list": None},
    ):
        assert check_settings() == []
        settings = conf.load()
    assert all(math.isfinite(number) for number in (*settings.timeout, settings.retry_max_delay))


# --- whatever settings.AUTUMN holds, the check reports and does not raise -----------


class Boom(Exception):
    pass


def boom(*args, **kwargs):
    raise Boom("hostile")


class Hostile:
    """Raises from everything a careless check might call."""

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = boom
    __bool__ = __str__ = __repr__ = __format__ = __len__ = __iter__ = boom
    __float__ = __int__ = __index__ = __contains__ = __getitem__ = boom
    __hash__ = object.__hash__  # so it can be a dict key


class HostileStr(str):
    __eq__ = __ne__ = __str__ = __repr__ = __format__ = boom
    strip = startswith = rstrip = encode = boom
    __hash__ = str.__hash__


class HostileFloat(float):
    __gt__ = __lt__ = __le__ = __ge__ = __eq__ = __ne__ = __repr__ = __bool__ = boom
    __hash__ = float.__hash__


def nested(depth):
    value = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def deep_list(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUES = [
    Hostile(),
    HostileStr("am_sk_test_" + "a" * 42),
    HostileStr("https://api.useautumn.com"),
    HostileFloat(3.0),
    b"am_sk_test_" + b"a" * 42,
    bytearray(b"2.1"),
    10**5000,
    -(10**5000),
    nested(50),
    deep_list(100_000),  # repr() of it raises RecursionError
    {"customers.update": Hostile()},
    {Hostile(): 1},
    [Hostile(), Hostile()],
    (Hostile(), Hostile()),
    {1, 2},
    object(),
    type,
    NAN,
    "x" * 1_000_000,
]


@pytest.mark.parametrize("setting", list(conf.DEFAULTS))
@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=lambda v: type(v).__name__)
def test_hostile_values_for_every_key_are_reported_not_raised(setting, value):
    with autumn(**{setting: value}):
        found = conf.problems()
        messages = check_settings()
        try:
            conf.load()
        except AutumnImproperlyConfigured:
            pass
    assert all(isinstance(problem, conf.Problem) for problem in found)
    assert all(isinstance(message, CheckMessage) for message in messages)
    for message in messages:
        assert len(str(message)) < 2000  # no megabyte of repr in a message
    if isinstance(value, Hostile):  # never a valid value for any key
        assert errors_for(setting, messages)


@pytest.mark.parametrize(
    "autumn_setting",
    [
        Hostile(),
        HostileStr("x"),
        [("SECRET_KEY", KEY)],
        {Hostile(): 1, "SECRET_KEY": KEY},
        {42: 1, b"SECRET_KEY": KEY, "SECRET_KEY": KEY},
        {"SECRET_KEY": KEY, **{f"K{i}": i for i in range(50)}},
    ],
    ids=["hostile", "hostile-str", "list", "hostile-key", "odd-keys", "many-keys"],
)
def test_a_hostile_autumn_setting_itself_is_reported_not_raised(autumn_setting):
    with override_settings(AUTUMN=autumn_setting):
        messages = check_settings()
        try:
            conf.load()
        except AutumnImproperlyConfigured:
            pass
    assert messages
    assert all(isinstance(message, CheckMessage) for message in messages)
    for message in messages:
        str(message)


def test_manage_py_check_reports_a_hostile_value_instead_of_crashing():
    with autumn(TIMEOUT=Hostile(), BASE_URL="http://[::1", API_VERSION=10**5000):
        with pytest.raises(SystemCheckError, match="autumn_django.E001"):
            call_command("check")


# --- manage.py check --deploy -----------------------------------------------------


def deploy_messages(**values):
    with autumn(**values):
        return [m for m in run_checks(include_deployment_checks=True) if m.id == "autumn_django.W003"]


@pytest.mark.parametrize(
    "url",
    ["http://autumn.internal:8080", "http://10.0.0.5", "http://api.useautumn.com", "http://[2001:db8::1]:80"],
)
def test_plain_http_to_another_host_is_a_deploy_warning(url):
    [warning] = deploy_messages(BASE_URL=url)
    assert isinstance(warning, Warning)
    assert 'AUTUMN["BASE_URL"]' in warning.msg and "https" in (warning.hint or "")


@pytest.mark.parametrize(
    "url",
    [
        "https://api.useautumn.com",
        "http://localhost:8787",
        "http://LOCALHOST:8787",
        "http://127.0.0.1:8787",
        "http://127.8.9.10",
        "http://[::1]:8787/",
    ],
)
def test_https_or_this_machine_is_no_deploy_warning(url):
    assert deploy_messages(BASE_URL=url) == []


def test_the_deploy_warning_is_only_under_deploy():
    with autumn(BASE_URL="http://autumn.internal:8080"):
        assert check_settings() == []
        assert [m for m in run_checks() if m.id == "autumn_django.W003"] == []


def test_the_deploy_warning_hides_the_credentials():
    [warning] = deploy_messages(BASE_URL="http://jane:s3cr3tpw@autumn.internal:8080/")
    assert "s3cr3tpw" not in warning.msg and "jane" not in warning.msg
    assert "http://***@autumn.internal:8080/" in warning.msg


def test_manage_py_check_deploy_shows_w003():
    with autumn(BASE_URL="http://autumn.internal:8080"):
        with pytest.raises(SystemCheckError, match="autumn_django.W003"):
            call_command("check", deploy=True, fail_level="WARNING")
