"""The example site: sign up, edit the profile, see and refresh the customer."""

import pytest
from django.urls import reverse

from autumn_django.models import Customer

# Real transactions: each request of the site commits before the next one
# (the redirect after sign-up) is made, so the page it shows is synced.
pytestmark = pytest.mark.django_db(transaction=True)


def sign_up(client):
    return client.post(
        reverse("signup"),
        {
            "username": "newbie",
            "email": "newbie@example.com",
            "password1": "a-Long-pass-123",
            "password2": "a-Long-pass-123",
        },
        follow=True,
    )


def test_signing_up_creates_the_autumn_customer_shown_on_the_billing_page(autumn_emulator, client):
    page = sign_up(client).content.decode()
    row = Customer.objects.get(user__username="newbie")
    assert row.state == "synced"
    assert autumn_emulator.customer(row.customer_id)["email"] == "newbie@example.com"
    assert 'id="email">newbie@example.com' in page and ">Synced</span>" in page


def test_editing_the_profile_updates_autumn(autumn_emulator, client):
    sign_up(client)
    page = client.post(
        reverse("profile"), {"first_name": "New", "last_name": "Bie", "email": "nb@example.com"}, follow=True
    )
    row = Customer.objects.get(user__username="newbie")
    assert autumn_emulator.customer(row.customer_id)["name"] == "New Bie"
    assert 'id="email">nb@example.com' in page.content.decode()


def test_refresh_reads_the_customer_from_autumn(autumn_emulator, client):
    sign_up(client)
    row = Customer.objects.get(user__username="newbie")
    from autumn_django.client import get_client

    get_client().update_customer(row.customer_id, stripe_id="cus_FromStripe1")
    page = client.post(reverse("billing-refresh"), follow=True).content.decode()
    assert "Refreshed from Autumn." in page and "cus_FromStripe1" in page


def test_pages_need_a_login(autumn_emulator, client):
    response = client.get(reverse("billing"))
    assert response.status_code == 302 and reverse("login") in response["Location"]
