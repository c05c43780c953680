import pytest

from autumn_django import contract
from autumn_django.contract import ApiVersion


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2.1", ApiVersion(2, 1, 0)),
        ("2.1.0", ApiVersion(2, 1, 0)),
        ("2.3", ApiVersion(2, 3, 0)),
        ("2.5.0", ApiVersion(2, 5, 0)),
        ("2026-03-17", ApiVersion(2, 1)),
        ("2026-03-18", ApiVersion(2, 2)),
        ("2026-05-13", ApiVersion(2, 3)),
        ("2026-05-13.clover", ApiVersion(2, 3)),
    ],
)
def test_api_versions_autumn_accepts(value, expected):
    assert contract.parse_api_version(value) == expected


@pytest.mark.parametrize("value", ["", "latest", "2", "9.9", "2.1.0.1", "v2.1", "2026-01-01"])
def test_api_versions_autumn_refuses(value):
    assert contract.parse_api_version(value) is None


def test_list_pages_by_offset_before_2_3_and_by_cursor_from_it():
    assert not contract.uses_cursor_pagination(ApiVersion(2, 2))
    assert contract.uses_cursor_pagination(ApiVersion(2, 3))


@pytest.mark.parametrize("value", ["42", "user_42", "org:7:user-1", "cus_123", "6f1c-uuid-like"])
def test_customer_ids_autumn_accepts(value):
    assert contract.customer_id_problem(value) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "can't be an empty string"),
        (
            "jane@example.com",
            "cannot contain @ symbol. Use only letters, numbers, underscores, hyphens, and colons.",
        ),
        ("jane doe", "cannot contain spaces. Use only letters, numbers, underscores, hyphens, and colons."),
        ("jane.doe", "cannot contain periods. Use only letters, numbers, underscores, hyphens, and colons."),
        ("jane#1", "cannot contain '#'. Use only letters, numbers, underscores, hyphens, and colons."),
        (42, "Invalid input: expected string, received number"),
    ],
)
def test_customer_ids_autumn_refuses_with_its_own_words(value, problem):
    assert contract.customer_id_problem(value) == problem


def test_the_key_prefix_alone_decides_the_environment():
    assert contract.key_env("am_sk_test_x") == "sandbox"
    assert contract.key_env("am_sk_live_x") == "live"
    assert contract.key_env("am_pk_test_x") is None


def test_published_rate_limits():
    v21, v23 = ApiVersion(2, 1), ApiVersion(2, 3)
    assert contract.endpoint_rate_limit(contract.LIST, v21) == (5, 1)
    assert contract.endpoint_rate_limit(contract.LIST, v23) == (50, 1)
    assert contract.endpoint_rate_limit(contract.UPDATE, v21) == (25, 1)
    assert contract.endpoint_rate_limit(contract.DELETE, v23) == (25, 1)
    assert contract.ORG_CAP == (240_000, 60)
    assert contract.per_second_limit(contract.GET_OR_CREATE, v21) == 4000
    assert contract.per_second_limit(contract.UPDATE, v23) == 25
