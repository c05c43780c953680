"""The example site: sign up, edit the profile, create a team, see and
refresh the customers, and their plans and balances."""

import datetime
import html
import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from autumn_django import billing
from autumn_django.models import Customer, CustomerPlan, WebhookEvent
from autumn_django.testing import django_transport, make_webhook_secret
from example_project.models import Team

# Real transactions: each request of the site commits before the next one
# (the redirect after sign-up) is made, so the page it shows is synced.
pytestmark = pytest.mark.django_db(transaction=True)

#: The example's CUSTOMER_SOURCES (the suite's settings keep the default, users only).
USERS_AND_TEAMS = ["autumn_django.sources.UserSource", "example_project.billing.TeamSource"]


def sign_up(client, username="newbie"):
    return client.post(
        reverse("signup"),
        {
            "username": username,
            "email": f"{username}@example.com",
            "password1": "a-Long-pass-123",
            "password2": "a-Long-pass-123",
        },
        follow=True,
    )


@pytest.fixture
def teams_billed(autumn_emulator, autumn_settings):
    autumn_settings(CUSTOMER_SOURCES=USERS_AND_TEAMS)
    return autumn_emulator


def create_team(client, name="Compilers"):
    return client.post(reverse("team-new"), {"name": name}, follow=True)


def test_signing_up_creates_the_autumn_customer_shown_on_the_billing_page(autumn_emulator, client):
    page = sign_up(client).content.decode()
    row = Customer.objects.of(get_user_model().objects.get(username="newbie")).get()
    assert row.state == "synced"
    assert autumn_emulator.customer(row.customer_id)["email"] == "newbie@example.com"
    assert 'id="email">newbie@example.com' in page and ">Synced</span>" in page


def test_editing_the_profile_updates_autumn(autumn_emulator, client):
    sign_up(client)
    page = client.post(
        reverse("profile"), {"first_name": "New", "last_name": "Bie", "email": "nb@example.com"}, follow=True
    )
    row = Customer.objects.of(get_user_model().objects.get(username="newbie")).get()
    assert autumn_emulator.customer(row.customer_id)["name"] == "New Bie"
    assert 'id="email">nb@example.com' in page.content.decode()


def test_refresh_reads_the_customer_from_autumn(autumn_emulator, client):
    sign_up(client)
    row = Customer.objects.of(get_user_model().objects.get(username="newbie")).get()
    from autumn_django.client import get_client

    get_client().update_customer(row.customer_id, stripe_id="cus_FromStripe1")
    page = client.post(reverse("billing-refresh"), follow=True).content.decode()
    assert "Refreshed from Autumn." in page and "cus_FromStripe1" in page


def test_pages_need_a_login(autumn_emulator, client):
    response = client.get(reverse("billing"))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_creating_a_team_makes_its_autumn_customer_shown_on_the_billing_page(teams_billed, client):
    sign_up(client)
    page = create_team(client).content.decode()
    team = Team.objects.get(name="Compilers")
    remote = teams_billed.customer(f"team:{team.pk}")
    assert remote["name"] == "Compilers" and remote["email"] == "newbie@example.com"
    assert remote["metadata"] == {"members": 1, "owner": "newbie"}
    row = Customer.objects.of(team).get()
    assert row.state == "synced" and row.customer_id == f"team:{team.pk}"
    assert "Team Compilers created: its Autumn customer is below." in page
    assert f'id="team-{team.pk}-customer-id">team:{team.pk}<' in page
    assert f'id="team-{team.pk}-state">Synced</span>' in page
    assert 'id="email">newbie@example.com' in page  # the user's own customer is still shown


def test_the_owners_email_change_updates_the_teams_customer_email(teams_billed, client):
    sign_up(client)
    create_team(client)
    client.post(reverse("profile"), {"first_name": "", "last_name": "", "email": "boss@example.com"})
    team = Team.objects.get(name="Compilers")
    assert teams_billed.customer(f"team:{team.pk}")["email"] == "boss@example.com"
    assert Customer.objects.of(team).get().email == "boss@example.com"


def test_adding_a_member_updates_the_member_count_in_metadata(teams_billed, client, make_user):
    make_user("ada")
    sign_up(client)
    create_team(client)
    team = Team.objects.get(name="Compilers")
    page = client.post(reverse("team-add-member", args=[team.pk]), {"username": "ada"}, follow=True)
    assert teams_billed.customer(f"team:{team.pk}")["metadata"] == {"members": 2, "owner": "newbie"}
    assert "ada joined Compilers." in page.content.decode()
    assert f'id="team-{team.pk}-metadata">members: 2, owner: newbie<' in page.content.decode()


def test_adding_a_user_who_does_not_exist_says_so_and_changes_nothing(teams_billed, client):
    sign_up(client)
    create_team(client)
    team = Team.objects.get(name="Compilers")
    page = client.post(reverse("team-add-member", args=[team.pk]), {"username": "nobody"}, follow=True)
    assert "No user is called nobody." in page.content.decode()
    assert teams_billed.customer(f"team:{team.pk}")["metadata"]["members"] == 1


def test_only_the_owner_adds_members(teams_billed, client):
    sign_up(client, "owner")
    create_team(client)
    team = Team.objects.get(name="Compilers")
    client.logout()
    sign_up(client, "stranger")
    response = client.post(reverse("team-add-member", args=[team.pk]), {"username": "stranger"})
    assert response.status_code == 404 and list(team.members.values_list("username", flat=True)) == ["owner"]


def test_a_member_sees_the_teams_customer_without_the_owners_form(teams_billed, client, make_user):
    owner = make_user("owner")
    team = Team.objects.create(name="Compilers", owner=owner)
    sign_up(client, "member")
    team.members.add(owner, get_user_model().objects.get(username="member"))
    page = client.get(reverse("billing")).content.decode()
    assert f'id="team-{team.pk}-customer-id">team:{team.pk}<' in page
    assert "Owner owner, 2 members." in page and "Add a member" not in page


def test_deleting_a_team_with_members_deletes_its_customer(teams_billed, client, make_user):
    make_user("ada")
    sign_up(client)
    create_team(client)
    team = Team.objects.get(name="Compilers")
    client.post(reverse("team-add-member", args=[team.pk]), {"username": "ada"})
    customer_id = f"team:{team.pk}"
    team.delete()  # the memberships go first, in the same delete
    assert teams_billed.customer(customer_id) is None
    assert not Customer.objects.filter(customer_id=customer_id).exists()


def test_refreshing_a_team_reads_its_customer_from_autumn(teams_billed, client):
    sign_up(client)
    create_team(client)
    team = Team.objects.get(name="Compilers")
    from autumn_django.client import get_client

    get_client().update_customer(f"team:{team.pk}", stripe_id="cus_TeamStripe1")
    page = client.post(reverse("team-refresh", args=[team.pk]), follow=True).content.decode()
    assert "Refreshed from Autumn." in page and "cus_TeamStripe1" in page


def test_without_team_sources_a_team_is_no_customer_and_the_page_says_so(autumn_emulator, client):
    """The suite's default CUSTOMER_SOURCES bills users only."""
    sign_up(client)
    page = create_team(client).content.decode()
    assert not Customer.objects.of(Team.objects.get()).exists()
    assert "Compilers" in page and "No Autumn customer yet." in page


# --- plans and balances on the billing page ----------------------------------------------------


@pytest.fixture
def webhooks(autumn_emulator, autumn_settings):
    """The emulator's events delivered to the site's endpoint in-process,
    signed with a secret the site accepts; the plan pro exists."""
    secret = make_webhook_secret()
    autumn_settings(WEBHOOK_SECRETS=[secret])
    autumn_emulator.add_plan("pro")
    autumn_emulator.add_webhook("/autumn/webhooks/", secret, transport=django_transport())
    return autumn_emulator


def cell(page, cell_id):
    """The text of the table cell ``cell_id`` of the page, tags dropped and spaces collapsed."""
    match = re.search(rf'<td id="{re.escape(cell_id)}">(.*?)</td>', page, re.DOTALL)
    assert match, f"no cell {cell_id} in the page"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def day(moment):
    return f"{timezone.localtime(moment):%-d %b %Y}"


def test_a_plan_attached_at_autumn_reaches_the_billing_page_by_webhook(webhooks, client):
    sign_up(client)
    row = Customer.objects.of(get_user_model().objects.get(username="newbie")).get()
    assert cell(client.get(reverse("billing")).content.decode(), "plans") == "None"
    webhooks.attach(row.customer_id, "pro")  # billing.updated: the view has run when this returns
    assert WebhookEvent.objects.get(type="billing.updated").state == "processed"
    page = client.get(reverse("billing")).content.decode()
    period_end = CustomerPlan.objects.get(customer=row).current_period_end
    assert cell(page, "plans") == f"pro active renews on {day(period_end)}"
    assert 'data-plan="pro"' in page and "Balances" not in page  # the emulator grants none


def test_without_a_webhook_the_refresh_button_brings_the_plan(autumn_emulator, client):
    autumn_emulator.add_plan("pro")
    sign_up(client)
    row = Customer.objects.of(get_user_model().objects.get(username="newbie")).get()
    autumn_emulator.attach(row.customer_id, "pro")  # no endpoint: the mirror does not know yet
    assert 'data-plan="pro"' not in client.get(reverse("billing")).content.decode()
    page = client.post(reverse("billing-refresh"), follow=True).content.decode()
    assert "Refreshed from Autumn." in page and cell(page, "plans").startswith("pro active renews on ")


def test_a_teams_plan_shows_in_the_teams_section(teams_billed, webhooks, client):
    sign_up(client)
    create_team(client)
    team = Team.objects.get(name="Compilers")
    webhooks.attach(f"team:{team.pk}", "pro")
    page = client.get(reverse("billing")).content.decode()
    assert cell(page, f"team-{team.pk}-plans").startswith("pro active renews on ")
    assert cell(page, "plans") == "None"  # the user's own customer has no plan


def test_the_page_shows_trials_cancellations_past_due_purchases_and_balances(autumn_emulator, client):
    """What the mirror holds, however Autumn put it there: the plans not
    expired, each with what a customer asks (until when, and why not),
    purchases bought twice once, and the balances."""
    sign_up(client)
    row = Customer.objects.of(get_user_model().objects.get(username="newbie")).get()
    now = int(time.time() * 1000)
    days = 86_400_000
    subscription = {"status": "active", "past_due": False, "canceled_at": None, "expires_at": None,
                    "trial_ends_at": None, "started_at": now - 40 * days, "current_period_start": None,
                    "current_period_end": None, "quantity": 1}  # fmt: skip
    data = {
        **row.data,
        "subscriptions": [
            {
                **subscription,
                "plan_id": "pro",
                "past_due": True,
                "trial_ends_at": now + 3 * days,
                "canceled_at": now - days,
                "expires_at": now + 20 * days,
                "current_period_end": now + 20 * days,
            },
            {**subscription, "plan_id": "max", "status": "scheduled", "started_at": now + 20 * days},
            {**subscription, "plan_id": "old", "status": "expired", "expires_at": now - days},
        ],
        "purchases": [
            {"plan_id": "credits", "started_at": now - 2 * days, "expires_at": None, "quantity": 1},
            {"plan_id": "credits", "started_at": now - days, "expires_at": None, "quantity": 1},
        ],
        "balances": {
            "messages": {
                "granted": 1000,
                "remaining": 742.5,
                "usage": 257.5,
                "unlimited": False,
                "next_reset_at": now + 20 * days,
            },
            "seats": {"unlimited": True},
        },
    }
    Customer.objects.filter(pk=row.pk).update(data=data)
    billing.store([(row.pk, data)])
    moment = lambda ms: datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)  # noqa: E731
    page = client.get(reverse("billing")).content.decode()
    assert cell(page, "plans") == (
        f"pro active past due trial ends {day(moment(now + 3 * days))}, "
        f"cancels on {day(moment(now + 20 * days))} "
        f"max scheduled starts on {day(moment(now + 20 * days))} "
        f"credits ×2 active first bought {day(moment(now - 2 * days))}"
    )
    assert cell(page, "balances") == (
        f"messages: 742.5 left of 1000, resets on {day(moment(now + 20 * days))} seats: unlimited"
    )
    assert 'data-plan="old"' not in page  # expired


def test_the_billing_page_reads_only_the_database(teams_billed, client):
    """No request to Autumn on a page load, and as many queries for three
    teams as for one."""
    sign_up(client)
    create_team(client, "One")
    queries = {}
    for teams in (1, 3):
        while Team.objects.count() < teams:
            create_team(client, f"Team {Team.objects.count() + 1}")
        requests = len(teams_billed.requests())
        with CaptureQueriesContext(connection) as captured:
            page = client.get(reverse("billing")).content.decode()
        assert len(teams_billed.requests()) == requests
        assert page.count('<section class="team"') == teams
        queries[teams] = len(captured.captured_queries)
    assert queries[1] == queries[3]
