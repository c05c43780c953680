"""Request fields read with Autumn's rules, in zod's words.

Autumn validates request bodies with zod, and clients show its messages to
people; the emulator checks the same rules and words its 400s the same way,
so code written against it meets the errors Autumn would give.

Contract notes: choices made where Autumn's customers API contract is silent.

* Validation reports the first problem only, in zod's wording.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import contract
from ..contract import UNSET
from .wire import JSONDict, Refusal, error_response


class Validator:
    """Reads request fields with zod's rules and wording: the first problem
    becomes a 400 whose message is ``<field>: <problem>``. A field absent
    from the body reads as :data:`~autumn_django.contract.UNSET`."""

    def __init__(self, body: JSONDict, env: str, *, limit_code: str = "invalid_inputs") -> None:
        self.body = body
        self.env = env
        self.limit_code = limit_code

    def fail(self, field: str, problem: str, code: str = "invalid_inputs") -> Refusal:
        return Refusal(error_response(400, code, f"{field}: {problem}", self.env))

    def required(self, name: str, kind: type, **rules: Any) -> Any:
        if name not in self.body:
            expected = "string" if kind is str else kind.__name__
            raise self.fail(name, f"Invalid input: expected {expected}, received undefined")
        return self.optional(name, kind, **rules)

    def optional(
        self,
        name: str,
        kind: type,
        *,
        nullable: bool = False,
        customer_id: bool = False,
        email: bool = False,
        choices: tuple[str, ...] = (),
    ) -> Any:
        if name not in self.body:
            return UNSET
        value = self.body[name]
        if value is None:
            if nullable:
                return None
            raise self.fail(name, f"Invalid input: expected {type_name(kind)}, received null")
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.fail(
                name,
                f"Invalid input: expected {type_name(kind)}, received {contract.json_type(value)}",
            )
        if customer_id:
            problem = contract.customer_id_problem(value)
            if problem:
                raise self.fail(name, problem)
        if email and isinstance(value, str) and value and not contract.is_valid_email(value):
            raise self.fail(name, "not a valid email address")
        if choices and value not in choices:
            options = "|".join(f'"{choice}"' for choice in choices)
            raise self.fail(name, f"Invalid option: expected one of {options}")
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self.body.get(name, default)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(name, f"Invalid input: expected int, received {contract.json_type(value)}")
        if value < minimum:
            raise self.fail(name, f"Too small: expected number to be >={minimum}")
        if maximum is not None and value > maximum:
            raise self.fail(name, f"Too big: expected number to be <={maximum}", self.limit_code)
        return value

    def expand(self) -> list[str]:
        value = self.optional("expand", list)
        if value is UNSET:
            return []
        for item in value:
            if item not in contract.EXPAND_VALUES:
                options = "|".join(f'"{choice}"' for choice in contract.EXPAND_VALUES)
                raise self.fail("expand", f"Invalid option: expected one of {options}")
        return value

    def plan_filters(self, plans: Any) -> list[tuple[str, set[int] | None]]:
        if plans in (UNSET, None):
            return []
        result = []
        for entry in plans:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise self.fail("plans", "Invalid input: expected object with a string id")
            versions = entry.get("versions")
            result.append((entry["id"], set(versions) if isinstance(versions, list) else None))
        return result


def type_name(kind: type) -> str:
    """A Python type as zod names it in messages."""
    return {str: "string", bool: "boolean", int: "number", dict: "record", list: "array"}[kind]


def matcher(
    *, search: str, plans: list[tuple[str, set[int] | None]], status: str | None
) -> Callable[[JSONDict], bool]:
    """The test a record must pass to be listed by ``customers.list``."""

    def matches(record: JSONDict) -> bool:
        if search and not any(search in (record[name] or "").lower() for name in ("id", "name", "email")):
            return False
        subscriptions = record["subscriptions"]
        if plans and not any(
            sub["plan_id"] == plan_id and (versions is None or 1 in versions)
            for sub in subscriptions
            for plan_id, versions in plans
        ):
            return False
        if status and not any(sub["status"] == status for sub in subscriptions):
            return False
        return True

    return matches
