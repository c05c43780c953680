"""Mapping functions that the tests name by dotted path."""


def customer_data(user):
    return {"name": user.username.upper(), "fingerprint": f"fp-{user.username}", "metadata": {"tier": "gold"}}
