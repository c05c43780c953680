"""Billing state in templates, read from the mirror (no request to Autumn):

.. code-block:: html+django

    {% load autumn %}
    {% if request.user|has_plan:"pro" %} ... {% endif %}
    {% if team|has_feature:"sso" %} ... {% endif %}
    {% autumn_balance request.user "messages" as messages %}{{ messages.remaining }}
    {% autumn_customer team as customer %}{{ customer.state }}

Each takes a user, any other customer source's object (a team), or a mirror
row. An object's row is read once per object and kept on it for the rest of
the render; an anonymous user, or an object not mirrored yet, has no plan.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.db import models

from ..models import Customer

register = template.Library()

#: Where an object keeps its mirror row once read, for the rest of a render.
CACHE_ATTRIBUTE = "_autumn_customer"


@register.simple_tag
def autumn_customer(obj: Any) -> Customer | None:
    """The mirror row of ``obj``, or None (anonymous, not mirrored yet)."""
    if isinstance(obj, Customer):
        return obj
    if not isinstance(obj, models.Model) or obj.pk is None:
        return None
    if not hasattr(obj, CACHE_ATTRIBUTE):
        setattr(obj, CACHE_ATTRIBUTE, Customer.objects.of(obj).first())
    return getattr(obj, CACHE_ATTRIBUTE)


@register.filter
def has_plan(obj: Any, plan_id: str) -> bool:
    """``obj``'s customer has ``plan_id`` now (see ``Customer.active_plan_ids``)."""
    customer = autumn_customer(obj)
    return customer is not None and customer.has_plan(plan_id)


@register.filter
def has_feature(obj: Any, feature_id: str) -> bool:
    """``obj``'s customer may use ``feature_id`` (a flag, or a balance left)."""
    customer = autumn_customer(obj)
    return customer is not None and customer.has_feature(feature_id)


@register.simple_tag
def autumn_balance(obj: Any, feature_id: str) -> dict[str, Any] | None:
    """Autumn's balance of ``feature_id`` for ``obj``'s customer, or None."""
    customer = autumn_customer(obj)
    return customer.balance(feature_id) if customer is not None else None
