"""The emulator's own behaviour at the HTTP level: what a client of any kind
(not only ours) sees."""

import json
import subprocess
import sys
import threading

import pytest
import requests

from autumn_django.emulator import Emulator
from autumn_django.testing import make_secret_key

KEY = make_secret_key()


def call(emulator, route="customers.list", body=None, *, key=KEY, version="2.1", method="POST", headers=None):
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    if version is not None:
        sent["x-api-version"] = version
    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return emulator.handle(method, f"/v1/{route}", sent, raw)


def error_of(response):
    return response.status, response.json["code"], response.json["message"]


# --- auth ----------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Basic abc", "Bearer", "Bearer "])
def test_no_bearer_token_is_no_secret_key(authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = Emulator().handle("POST", "/v1/customers.list", headers, b"{}")
    assert error_of(response) == (401, "no_secret_key", "Secret key not found in Authorization header")
    assert response.json["env"] == "sandbox"


def test_a_token_with_an_unknown_prefix_is_invalid_request():
    response = call(Emulator(), key="sk_live_123")
    assert error_of(response) == (401, "invalid_request", "Invalid authorization token prefix")


def test_a_publishable_key_is_refused_on_these_routes():
    response = call(Emulator(), key="am_pk_test_" + "a" * 42)
    assert response.status == 401 and response.json["code"] == "endpoint_not_public"


def test_a_well_formed_key_is_accepted_when_no_keys_are_configured():
    assert call(Emulator()).status == 200


def test_a_malformed_key_with_a_good_prefix_is_an_invalid_secret_key():
    response = call(Emulator(), key="am_sk_test_short")
    assert error_of(response) == (
        401,
        "invalid_secret_key",
        "Invalid secret key: a valid one is am_sk_test_ or am_sk_live_ followed by 42 letters and digits.",
    )


# --- versions --------------------------------------------------------------------


def test_a_bad_version_header_is_invalid_api_version():
    response = call(Emulator(), version="3.0")
    assert error_of(response) == (400, "invalid_api_version", '"3.0" is not a valid API version')
    assert response.json["env"] == "sandbox"


def test_auth_is_checked_before_the_version():
    assert call(Emulator(), key=None, version="nonsense").status == 401


def test_without_a_version_header_the_default_version_answers():
    offset_style = call(Emulator(default_api_version="2.2"), version=None).json
    cursor_style = call(Emulator(default_api_version="2.3"), version=None).json
    assert "offset" in offset_style and set(cursor_style) == {"list", "next_cursor"}


def test_calver_versions_pick_the_list_style():
    emulator = Emulator()
    assert "has_more" in call(emulator, version="2026-03-18").json
    assert "next_cursor" in call(emulator, version="2026-05-13").json


# --- routes and bodies -----------------------------------------------------------


def test_the_seed_spelling_get_or_create_is_not_served_and_the_404_names_the_route():
    response = call(Emulator(), "customers.getOrCreate", {"customer_id": "1"})
    assert response.status == 404 and response.json["code"] == "not_found"
    assert "/v1/customers.get_or_create" in response.json["message"]


def test_routes_answer_post_only():
    response = call(Emulator(), method="GET")
    assert response.status == 404 and "POST only" in response.json["message"]


def test_unknown_body_keys_are_dropped_silently():
    assert call(Emulator(), "customers.get_or_create", {"customer_id": "1", "colour": "red"}).status == 200


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]"])
def test_an_unparsable_or_empty_body_counts_as_empty_and_fails_validation(body):
    response = call(Emulator(), "customers.get_or_create", body)
    assert error_of(response) == (
        400,
        "invalid_inputs",
        "customer_id: Invalid input: expected string, received undefined",
    )


def test_every_success_is_200_with_json_creation_included():
    response = call(Emulator(), "customers.get_or_create", {"customer_id": "1"})
    assert response.status == 200 and response.headers["Content-Type"] == "application/json"


# --- idempotency keys -------------------------------------------------------------


def test_a_reused_idempotency_key_is_refused_not_replayed():
    emulator = Emulator()
    headers = {"Idempotency-Key": "k1"}
    first = call(emulator, "customers.get_or_create", {"customer_id": "1"}, headers=headers)
    second = call(emulator, "customers.get_or_create", {"customer_id": "1"}, headers=headers)
    assert first.status == 200
    assert (second.status, second.json["code"]) == (409, "duplicate_idempotency_key")


def test_an_idempotency_key_may_be_reused_after_24_hours():
    clock = [0.0]
    emulator = Emulator(clock=lambda: clock[0])
    call(emulator, headers={"Idempotency-Key": "k1"})
    clock[0] = 24 * 3600 + 1
    assert call(emulator, headers={"Idempotency-Key": "k1"}).status == 200


# --- rate limits --------------------------------------------------------------------


def limited(clock):
    return Emulator(rate_limits=True, clock=lambda: clock[0])


def test_updates_are_limited_to_25_a_second_with_a_plain_text_429():
    clock = [100.2]
    emulator = limited(clock)
    call(emulator, "customers.get_or_create", {"customer_id": "1"})
    answers = [call(emulator, "customers.update", {"customer_id": "1", "name": "x"}) for _ in range(26)]
    assert [a.status for a in answers] == [200] * 25 + [429]
    refused = answers[-1]
    assert refused.body == b"Too many requests, please try again later."
    assert refused.headers["Content-Type"].startswith("text/plain")
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["RateLimit-Policy"] == "25;w=1"
    assert (refused.headers["RateLimit-Limit"], refused.headers["RateLimit-Remaining"]) == ("25", "0")
    assert answers[0].headers["RateLimit-Remaining"] == "24"
    clock[0] = 101.0  # the next window
    assert call(emulator, "customers.update", {"customer_id": "1", "name": "y"}).status == 200


@pytest.mark.parametrize(("version", "limit"), [("2.1", 5), ("2.2", 5), ("2.3", 50)])
def test_list_is_limited_per_version(version, limit):
    emulator = limited([7.5])
    statuses = [call(emulator, version=version).status for _ in range(limit + 1)]
    assert statuses == [200] * limit + [429]


def test_each_environment_has_its_own_windows():
    emulator = limited([7.5])
    for _ in range(5):
        call(emulator)
    assert call(emulator).status == 429
    assert call(emulator, key=make_secret_key("live")).status == 200


def test_without_rate_limits_nothing_is_limited_and_no_headers_are_sent():
    emulator = Emulator()
    answers = [call(emulator) for _ in range(30)]
    assert {a.status for a in answers} == {200}
    assert "RateLimit-Limit" not in answers[-1].headers


# --- faults ---------------------------------------------------------------------------


def test_scripted_failures_hit_only_their_route_and_only_n_times():
    emulator = Emulator()
    emulator.fail_next(2, "customers.update", status=500)
    assert call(emulator).status == 200
    call(emulator, "customers.get_or_create", {"customer_id": "1"})
    statuses = [call(emulator, "customers.update", {"customer_id": "1"}).status for _ in range(3)]
    assert statuses == [500, 500, 200]


def test_a_scripted_failure_can_carry_any_code_and_message():
    emulator = Emulator()
    emulator.fail_next(status=400, code="stripe_error", message="(Stripe Error) card declined")
    assert error_of(call(emulator)) == (400, "stripe_error", "(Stripe Error) card declined")


def test_fail_rate_fails_about_that_fraction():
    emulator = Emulator(fail_rate=0.3, seed=1)
    statuses = [call(emulator).status for _ in range(1000)]
    assert 250 < statuses.count(503) < 350
    assert set(statuses) == {200, 503}


def test_the_request_log_and_counters_record_every_call_without_the_key():
    emulator = Emulator()
    call(emulator)
    call(emulator, "customers.get", {"customer_id": "x"})
    assert emulator.counts == {"customers.list": 1, "customers.get": 1}
    entry = emulator.requests("customers.get")[0]
    assert (entry.status, entry.env, entry.api_version, entry.body) == (
        404,
        "sandbox",
        "2.1",
        {"customer_id": "x"},
    )
    assert "authorization" not in entry.headers
    assert KEY not in repr(emulator.log)


def test_reset_forgets_everything():
    emulator = Emulator()
    call(emulator, "customers.get_or_create", {"customer_id": "1"})
    emulator.fail_next(5)
    emulator.reset()
    assert emulator.customers() == [] and emulator.requests() == [] and call(emulator).status == 200


# --- persistence --------------------------------------------------------------------


def test_a_data_file_keeps_customers_across_restarts(tmp_path):
    data = tmp_path / "emulator.json"
    first = Emulator(data_file=data)
    call(first, "customers.get_or_create", {"customer_id": "1", "name": "Jane"})
    call(first, "customers.get_or_create", {"customer_id": None, "email": "x@example.com"})
    first.close()
    second = Emulator(data_file=data)
    assert second.customer("1")["name"] == "Jane"
    claimed = call(second, "customers.get_or_create", {"customer_id": "2", "email": "x@example.com"})
    assert claimed.json["id"] == "2" and len(second.customers()) == 2
    created = call(second, "customers.get_or_create", {"customer_id": "3"}).json
    assert created["created_at"] >= claimed.json["created_at"]
    second.close()


def test_the_data_file_is_saved_in_the_background(tmp_path):
    import time

    data = tmp_path / "emulator.json"
    emulator = Emulator(data_file=data)
    call(emulator, "customers.get_or_create", {"customer_id": "1"})
    deadline = time.monotonic() + 3
    while not data.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(data.read_text())["records"]["sandbox"][0]["id"] == "1"
    emulator.close()


# --- the HTTP server ---------------------------------------------------------------


@pytest.mark.http
def test_the_http_server_serves_concurrent_clients_consistently(http_emulator):
    url = http_emulator.url
    errors = []

    def sign_up(worker):
        with requests.Session() as session:
            session.headers.update({"Authorization": f"Bearer {KEY}", "x-api-version": "2.1"})
            for number in range(50):
                answer = session.post(
                    f"{url}/v1/customers.get_or_create", json={"customer_id": f"w{worker}-{number % 25}"}
                )
                if answer.status_code != 200:
                    errors.append(answer.status_code)

    threads = [threading.Thread(target=sign_up, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(http_emulator.emulator.customers()) == 8 * 25
    assert http_emulator.emulator.counts["customers.get_or_create"] == 400


@pytest.mark.http
def test_python_m_autumn_django_emulator_serves_until_stopped(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autumn_django.emulator",
            "--port",
            "0",
            "--plan",
            "pro",
            "--data",
            str(tmp_path / "data.json"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        url = banner.split(" at ")[1].split(" ")[0]
        answer = requests.post(
            f"{url}/v1/customers.get_or_create",
            json={"customer_id": "1", "auto_enable_plan_id": "pro"},
            headers={"Authorization": f"Bearer {KEY}", "x-api-version": "2.1"},
            timeout=5,
        )
        assert answer.status_code == 200
        assert answer.json()["subscriptions"][0]["plan_id"] == "pro"
    finally:
        process.send_signal(subprocess.signal.SIGINT)
        process.wait(timeout=10)
    saved = json.loads((tmp_path / "data.json").read_text())
    assert [record["id"] for record in saved["records"]["sandbox"]] == ["1"]


def test_manage_py_autumn_emulator_takes_the_same_options():
    from autumn_django.emulator.cli import build_emulator
    from autumn_django.management.commands.autumn_emulator import Command

    parser = Command().create_parser("manage.py", "autumn_emulator")
    options = parser.parse_args(
        [
            "--port",
            "9999",
            "--secret-key",
            KEY,
            "--api-version",
            "2.3",
            "--plan",
            "pro",
            "--default-plan",
            "free",
            "--latency-ms",
            "5",
            "--rate-limits",
            "--fail-rate",
            "0.1",
        ]
    )
    emulator = build_emulator(options)
    assert (options.port, emulator.default_api_version, emulator.rate_limits) == (9999, "2.3", True)
    assert (emulator.latency_ms, emulator.fail_rate) == (5, 0.1)
    assert sorted(emulator.plans) == ["free", "pro"] and emulator.plans["free"].default
    emulator.fail_rate = 0  # injected faults come before auth; switch them off to see it
    assert call(emulator, key=make_secret_key()).status == 401  # only the given key
    assert call(emulator, key=KEY, version="2.3").status == 200


def test_a_bad_fail_rate_is_refused_with_a_clear_message():
    from autumn_django.emulator.cli import build_emulator
    from autumn_django.management.commands.autumn_emulator import Command

    options = Command().create_parser("manage.py", "autumn_emulator").parse_args(["--fail-rate", "2"])
    with pytest.raises(SystemExit, match="--fail-rate must be between 0 and 1"):
        build_emulator(options)


@pytest.mark.http
def test_concurrent_creations_of_one_id_return_the_same_customer(http_emulator):
    url, created = http_emulator.url, []

    def sign_up():
        answer = requests.post(
            f"{url}/v1/customers.get_or_create",
            json={"customer_id": "same", "name": "Jane"},
            headers={"Authorization": f"Bearer {KEY}", "x-api-version": "2.1"},
            timeout=5,
        )
        created.append(answer.json()["created_at"])

    threads = [threading.Thread(target=sign_up) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 12 and len(set(created)) == 1
    assert len(http_emulator.emulator.customers()) == 1


@pytest.mark.http
def test_the_http_server_reports_its_counters(http_emulator):
    call(http_emulator.emulator)
    call(http_emulator.emulator, "customers.get", {"customer_id": "x"})
    stats = requests.get(f"{http_emulator.url}/_emulator/stats", timeout=5).json()
    assert stats["calls"] == {"customers.list": 1, "customers.get": 1}
    assert stats["statuses"] == {"customers.list 200": 1, "customers.get 404": 1}
    assert stats["customers"] == {"sandbox": 0, "live": 0}


def test_add_customer_can_give_active_plans():
    emulator = Emulator()
    customer = emulator.add_customer(id="p1", plans=["pro", "seats"])
    assert [(s["plan_id"], s["status"]) for s in customer["subscriptions"]] == [
        ("pro", "active"),
        ("seats", "active"),
    ]
    assert sorted(emulator.plans) == ["pro", "seats"]
