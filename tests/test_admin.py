"""The admin: the mirror's page and actions, and the remote customers browser
(through Django's test client; tests/test_browser.py drives a real browser).

The tests run in the test case's transaction; ``commit()`` runs the on-commit
sync of the users made in its block, as the commit of a real transaction
would (see tests/conftest.py)."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from autumn_django import billing, sync
from autumn_django.admin import object_admin_url, user_admin_url
from autumn_django.models import Customer, CustomerPlan
from autumn_django.signals import disable_sync
from tests.teams.billing import EVERY_SOURCE, TeamSource
from tests.teams.models import Team

pytestmark = pytest.mark.django_db

LIST = reverse("admin:autumn_django_remotecustomer_changelist")
MIRROR = reverse("admin:autumn_django_customer_changelist")
FUTURE = 10**13  # a created_at (ms) after any real one


def detail(customer_id):
    return reverse("admin:autumn_django_remotecustomer_detail", args=[customer_id])


@pytest.fixture
def admin_user(django_user_model, commit):
    """pytest-django's superuser for ``admin_client``, mirrored at Autumn as
    its sign-up would be (its on-commit sync run)."""
    with commit():
        return django_user_model.objects.create_superuser("admin", "admin@example.com", "password")


@pytest.fixture
def staff(autumn_emulator, make_user, client):
    """A staff member with no Autumn permission yet, logged in."""
    user = make_user("staff", is_staff=True)
    client.force_login(user)
    return user


@pytest.fixture
def make_team(autumn_emulator, autumn_settings, make_user, commit):
    """Teams are customers too (users and workspaces stay so): ``make_team("Acme")``
    makes a team owned by a new user, both synced as their saves would be."""
    autumn_settings(CUSTOMER_SOURCES=EVERY_SOURCE)

    def make(name):
        with commit():
            owner = make_user(f"owner-of-{name.lower().replace(' ', '-')}")
            return Team.objects.create(name=name, owner=owner)

    return make


class RenamedTeamSource(TeamSource):
    """Teams billed under ids that are not ``team:<pk>``."""

    def customer_id(self, team):
        return f"account-{team.pk}"


def row_html(page, text):
    """The list row (``<tr>...</tr>``) of ``page`` that holds ``text``."""
    at = page.index(text)
    return page[page.rindex("<tr", 0, at) : page.index("</tr>", at)]


def grant(user, *codenames):
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="autumn_django", codename__in=codenames)
    )


# --- permissions ------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(autumn_emulator, client):
    response = client.get(LIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_without_the_view_permission_get_403(autumn_emulator, client, staff):
    assert client.get(LIST).status_code == 403
    assert client.get(detail("1")).status_code == 403


def test_the_view_permission_opens_the_list_but_not_delete(autumn_emulator, client, staff):
    grant(staff, "view_remotecustomer")
    autumn_emulator.add_customer(id="c1")
    assert client.get(LIST).status_code == 200
    assert client.get(reverse("admin:autumn_django_remotecustomer_delete", args=["c1"])).status_code == 403
    assert client.post(reverse("admin:autumn_django_remotecustomer_delete", args=["c1"])).status_code == 403
    assert autumn_emulator.customer("c1") is not None


def test_the_entry_appears_in_the_admin_index(autumn_emulator, admin_client):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert "Autumn customers" in page and "Autumn customer mirrors" in page


# --- the remote list ---------------------------------------------------------------


def test_the_list_shows_autumns_customers_with_plans_and_linked_users(
    autumn_emulator, admin_client, make_user, commit
):
    autumn_emulator.add_plan("pro")
    with commit():
        user = make_user("jane")  # synced by the signal
    from autumn_django.client import get_client

    get_client().get_or_create_customer(
        "paying", name="Paying Customer", auto_enable_plan_id="pro", stripe_id="cus_Stripe1234"
    )
    page = admin_client.get(LIST).content.decode()
    assert (
        "Paying Customer" in page
        and "cus_Stripe1234" in page
        and '<span class="autumn-plan">pro</span>' in page
    )
    assert f">{user}</a>" in page  # the local user, linked
    assert '<span class="autumn-quiet autumn-env">Sandbox</span>' in page


def test_the_search_box_is_autumns_search(autumn_emulator, admin_client):
    autumn_emulator.add_customer(id="a1", name="Ada Lovelace")
    autumn_emulator.add_customer(id="g1", name="Grace Hopper")
    page = admin_client.get(LIST, {"q": "lovelace"}).content.decode()
    assert "Ada Lovelace" in page and "Grace Hopper" not in page
    assert autumn_emulator.requests("customers.list")[-1].body["search"] == "lovelace"


def test_offset_pages_at_2_1_have_page_links_and_the_filtered_total(autumn_emulator, admin_client):
    for number in range(60):  # newer than the admin's own customer, made at login
        autumn_emulator.add_customer(id=f"c{number:02d}", created_at=FUTURE + number)
    first = admin_client.get(LIST, {"per_page": 25}).content.decode()
    assert "c59" in first and "c35" in first and "c34" not in first
    assert "61 customers" in first and "?per_page=25&amp;p=3" in first
    third = admin_client.get(LIST, {"per_page": 25, "p": 3}).content.decode()
    assert "c09" in third and "c10" not in third
    assert autumn_emulator.requests("customers.list")[-1].body == {"limit": 25, "offset": 50}


def test_cursor_pages_at_2_3_go_forward_and_back(autumn_emulator, admin_client, autumn_settings):
    autumn_settings(API_VERSION="2.3")
    for number in range(60):
        autumn_emulator.add_customer(id=f"c{number:02d}", created_at=FUTURE + number)
    import html as html_lib
    from urllib.parse import parse_qsl

    def page(params):
        """The customer ids on a page and its Previous/Next links' parameters."""
        html = admin_client.get(LIST, params).content.decode()
        ids = re.findall(
            r'class="autumn-customer">\s*<th class="field-id"><span class="autumn-id"><a [^>]*>(c\d+)</a>',
            html,
        )
        links = re.findall(r'<a href="\?([^"]*)" class="autumn-(previous|next)"', html)
        return ids, {kind: dict(parse_qsl(html_lib.unescape(query))) for query, kind in links}

    ids1, links1 = page({"per_page": 25})
    assert ids1[0] == "c59" and len(ids1) == 25 and "previous" not in links1
    ids2, links2 = page(links1["next"])
    assert ids2[0] == "c34"
    ids3, links3 = page(links2["next"])
    assert ids3 == [f"c{n:02d}" for n in range(9, -1, -1)] and "next" not in links3
    back2, _ = page(links3["previous"])
    back1, _ = page(links2["previous"])
    assert back2 == ids2 and back1 == ids1
    assert "offset" not in autumn_emulator.requests("customers.list")[-1].body


def test_one_autumn_call_and_constant_queries_whatever_the_page_size(
    autumn_emulator, admin_client, make_user, commit, django_assert_max_num_queries
):
    with commit():
        users = [make_user(f"u{n}") for n in range(30)]
    for size in (25, 100):
        before = len(autumn_emulator.requests())
        with django_assert_max_num_queries(8):
            response = admin_client.get(LIST, {"per_page": size})
        assert response.status_code == 200
        assert len(autumn_emulator.requests()) - before == 1
        # Every customer on the page is linked to its user: the queries are
        # constant with the links drawn, not because none are.
        page = response.content.decode()
        assert len([user for user in users if f">{user}</a>" in page]) == min(size, len(users))


def test_an_autumn_failure_is_a_message_not_a_500(autumn_emulator, admin_client):
    autumn_emulator.fail_next(
        5, status=401, code="invalid_secret_key", message="Invalid secret key: am_sk_test_abcd****..."
    )
    response = admin_client.get(LIST)
    assert response.status_code == 200
    assert "Autumn answered HTTP 401 invalid_secret_key" in response.content.decode()


def test_the_admin_client_has_the_admin_timeout_and_one_retry(autumn_settings):
    from autumn_django.admin import admin_client

    autumn_settings(ADMIN_TIMEOUT=(0.5, 1.5))
    assert admin_client().timeout == (0.5, 1.5) and admin_client().max_retries == 1


@pytest.mark.http
def test_a_slow_autumn_is_a_message_after_the_short_admin_timeout_not_a_hang(
    autumn_emulator_server, admin_client, autumn_settings
):
    autumn_settings(ADMIN_TIMEOUT=(1, 0.2))
    autumn_emulator_server.emulator.latency_ms = 5000
    started = time.monotonic()
    response = admin_client.get(LIST)
    elapsed = time.monotonic() - started
    page = response.content.decode()
    assert response.status_code == 200
    assert "Autumn could not be reached: customers.list: no answer" in page and "timed out" in page
    assert elapsed < 2  # two reads (one retry) of 0.2 s, not the 5 s Autumn takes


def test_the_secret_key_is_on_no_page(autumn_emulator, admin_client, settings, make_user, commit):
    with commit():
        user = make_user("jane")
    key = settings.AUTUMN["SECRET_KEY"]
    pages = [
        admin_client.get(LIST),
        admin_client.get(detail(str(user.pk))),
        admin_client.get(reverse("admin:autumn_django_remotecustomer_delete", args=[str(user.pk)])),
        admin_client.get(reverse("admin:autumn_django_customer_changelist")),
        admin_client.get(
            reverse("admin:autumn_django_customer_change", args=[Customer.objects.of(user).get().pk])
        ),
    ]
    for response in pages:
        assert response.status_code == 200
        assert key not in response.content.decode()


# --- detail, link, delete ----------------------------------------------------------------


def test_the_detail_page_shows_fields_plans_balances_and_raw_json(autumn_emulator, admin_client):
    autumn_emulator.add_plan("pro")
    from autumn_django.client import get_client

    get_client().get_or_create_customer(
        "d1", name="Detail Person", email="d@example.com", auto_enable_plan_id="pro"
    )
    page = admin_client.get(detail("d1")).content.decode()
    assert "Detail Person" in page and "d@example.com" in page
    assert 'class="autumn-subscription"><td>pro</td><td>active</td>' in page
    assert "No balances." in page and "&quot;subscriptions&quot;" in page


def test_an_unknown_customer_says_so(autumn_emulator, admin_client):
    page = admin_client.get(detail("ghost")).content.decode()
    assert "customer_not_found" in page and "Autumn did not return this customer." in page


def test_link_or_import_makes_the_mirror_row(autumn_emulator, admin_client, make_user):
    from autumn_django.signals import disable_sync

    with disable_sync():
        user = make_user("old")
    autumn_emulator.add_customer(id=str(user.pk), name="Made elsewhere", stripe_id="cus_Linked1234")
    assert f"Link to {user}" in admin_client.get(detail(str(user.pk))).content.decode()
    response = admin_client.post(reverse("admin:autumn_django_remotecustomer_link", args=[str(user.pk)]))
    assert response.status_code == 302
    row = Customer.objects.of(user).get()
    assert (row.state, row.stripe_id, row.name) == ("synced", "cus_Linked1234", "Made elsewhere")


def test_link_needs_post(autumn_emulator, admin_client):
    assert admin_client.get(reverse("admin:autumn_django_remotecustomer_link", args=["x"])).status_code == 405


def test_delete_in_autumn_asks_first_then_deletes_on_post(autumn_emulator, admin_client, make_user, commit):
    with commit():
        user = make_user("gone")
    url = reverse("admin:autumn_django_remotecustomer_delete", args=[str(user.pk)])
    confirm = admin_client.get(url).content.decode()
    assert "Yes, delete it in Autumn" in confirm and "csrfmiddlewaretoken" in confirm
    assert autumn_emulator.customer(str(user.pk)) is not None
    assert admin_client.post(url).status_code == 302
    assert autumn_emulator.customer(str(user.pk)) is None
    assert not Customer.objects.of(user).exists()


def test_state_changes_need_the_csrf_token(autumn_emulator, django_user_model, commit):
    from django.test import Client

    with commit():
        admin = django_user_model.objects.create_superuser("root", "root@example.com", "x")
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(admin)
    url = reverse("admin:autumn_django_remotecustomer_delete", args=[str(admin.pk)])
    assert csrf_client.post(url).status_code == 403
    assert autumn_emulator.customer(str(admin.pk)) is not None


# --- the mirror's admin ---------------------------------------------------------------------


def test_the_mirror_list_shows_state_and_searches_the_user(autumn_emulator, admin_client, make_user, commit):
    with commit():
        make_user("findme")
    autumn_emulator.fail_next(5, status=503)
    with commit():
        make_user("broken")
    url = reverse("admin:autumn_django_customer_changelist")
    page = admin_client.get(url).content.decode()
    assert ">Synced</span>" in page and ">Failed</span>" in page and "503 service_unavailable" in page
    found = admin_client.get(url, {"q": "findme"}).content.decode()
    assert ">findme</a>" in found and ">broken</a>" not in found  # found by the user's username
    filtered = admin_client.get(url, {"state__exact": "failed"}).content.decode()
    assert ">broken</a>" in filtered and ">findme</a>" not in filtered


def test_mirror_actions_sync_retry_and_refresh(autumn_emulator, admin_client, make_user, commit):
    autumn_emulator.fail_next(5, status=503)
    with commit():
        user = make_user("later")
    row = Customer.objects.of(user).get()
    assert row.state == "failed"
    url = reverse("admin:autumn_django_customer_changelist")
    response = admin_client.post(url, {"action": "retry_failed", "_selected_action": [row.pk]}, follow=True)
    assert "1 customer synced with Autumn: 1 created." in response.content.decode()
    assert Customer.objects.get(pk=row.pk).state == "synced"
    from autumn_django.client import get_client

    get_client().update_customer(str(user.pk), stripe_id="cus_Refreshed12")
    response = admin_client.post(
        url, {"action": "refresh_from_autumn", "_selected_action": [row.pk]}, follow=True
    )
    assert "1 customer refreshed from Autumn." in response.content.decode()
    assert Customer.objects.get(pk=row.pk).stripe_id == "cus_Refreshed12"
    autumn_emulator.fail_next(5, status=400, code="invalid_inputs", message="email: bad")
    user.email = "changed@example.com"
    with commit():
        user.save()
    response = admin_client.post(url, {"action": "sync_now", "_selected_action": [row.pk]}, follow=True)
    page = response.content.decode()
    assert response.status_code == 200 and "email: bad" in page and "1 customer could not be synced." in page


def test_the_change_page_shows_the_json_and_allows_no_adding(
    autumn_emulator, admin_client, make_user, commit
):
    with commit():
        user = make_user("jane")
    row = Customer.objects.of(user).get()
    page = admin_client.get(reverse("admin:autumn_django_customer_change", args=[row.pk])).content.decode()
    assert "<pre>{" in page and "&quot;email&quot;: &quot;jane@example.com&quot;" in page
    assert admin_client.get(reverse("admin:autumn_django_customer_add")).status_code == 403


def messages_of(response):
    return [(message.level_tag, message.message) for message in response.context["messages"]]


def test_every_action_says_what_it_did_even_nothing(autumn_emulator, admin_client, make_user, commit):
    with commit():
        users = [make_user(name) for name in ("ada", "grace", "alan")]
    rows = [Customer.objects.of(user).get().pk for user in users]
    url = reverse("admin:autumn_django_customer_changelist")

    def act(action, selected):
        return messages_of(
            admin_client.post(url, {"action": action, "_selected_action": selected}, follow=True)
        )

    assert act("retry_failed", rows[:1]) == [
        ("info", "Nothing to retry: the customer selected has not failed.")
    ]
    assert act("retry_failed", rows) == [
        ("info", "Nothing to retry: none of the 3 customers selected has failed.")
    ]
    assert act("sync_now", rows) == [("success", "3 customers synced with Autumn: 3 unchanged.")]
    assert act("refresh_from_autumn", rows) == [("success", "3 customers refreshed from Autumn.")]
    autumn_emulator.fail_next(5, status=503)
    users[0].email = "new@example.com"
    with commit():
        users[0].save()
    assert Customer.objects.get(pk=rows[0]).state == "failed"
    said = act("retry_failed", rows)
    assert said == [
        (
            "success",
            "1 customer synced with Autumn: 1 updated. The other 2 customers selected had not failed.",
        )
    ]
    autumn_emulator.fail_next(10, status=503)
    said = act("refresh_from_autumn", rows[:2])
    assert said[0] == ("error", "2 customers could not be refreshed.") and len(said) == 3
    assert said[1][1].startswith(f"{users[0].pk}: Autumn answered HTTP 503 service_unavailable")


def test_the_mirror_page_is_read_only(autumn_emulator, admin_client, make_user, commit):
    """No editable field and no Save: the sync engine writes rows. A POST to
    the page is refused; the list's actions still need the change permission."""
    with commit():
        user = make_user("jane")
    row = Customer.objects.of(user).get()
    url = reverse("admin:autumn_django_customer_change", args=[row.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page and 'name="user"' not in page
    assert "View Autumn customer mirror" in page and "closelink" in page
    assert admin_client.post(url, {"user": user.pk, "customer_id": "hijacked"}).status_code == 403
    assert Customer.objects.get(pk=row.pk).customer_id == row.customer_id
    assert reverse("admin:autumn_django_remotecustomer_detail", args=[row.customer_id]) in page


def test_a_change_permission_alone_still_runs_the_actions(autumn_emulator, client, staff, commit, make_user):
    grant(staff, "change_customer")
    with commit():
        user = make_user("ada")
    row = Customer.objects.of(user).get()
    url = reverse("admin:autumn_django_customer_changelist")
    response = client.post(url, {"action": "sync_now", "_selected_action": [row.pk]}, follow=True)
    assert messages_of(response) == [("success", "1 customer synced with Autumn: 1 unchanged.")]
    assert client.get(reverse("admin:autumn_django_customer_change", args=[row.pk])).status_code == 200


def test_the_mirror_list_words_a_blank_as_everywhere_else(autumn_emulator, admin_client, django_user_model):
    from autumn_django.signals import disable_sync

    with disable_sync():
        user = django_user_model.objects.create_user("nameless", email="")
    Customer.objects.create(**sync.link_values(user), customer_id="blank1", env="sandbox", state="pending")
    page = admin_client.get(reverse("admin:autumn_django_customer_changelist")).content.decode()
    assert '<td class="field-names">—</td>' in page and '<td class="field-synced">never</td>' in page
    assert ">-<" not in page


# --- the remote pages' words and page links -----------------------------------------------


def test_page_links_elide_with_an_ellipsis_as_the_admin_does(autumn_emulator, admin_client):
    import re

    for number in range(160):  # 161 with the admin's own: 7 pages of 25
        autumn_emulator.add_customer(id=f"c{number:03d}", created_at=FUTURE + number)

    def links(page_number):
        html = admin_client.get(LIST, {"per_page": 25, "p": page_number}).content.decode()
        pages = html[html.index('class="paginator') : html.index("</p>", html.index('class="paginator'))]
        return re.findall(r">(\d+|…)</(?:a|strong|span)>", pages)

    assert links(1) == ["1", "2", "3", "…", "7"]
    assert links(4) == ["1", "2", "3", "4", "5", "6", "7"]
    assert links(7) == ["1", "…", "5", "6", "7"]
    assert links(99) == ["1", "…", "5", "6", "7"]  # an old link past the end: drawn from the last page


def test_a_search_with_no_match_shows_no_page(autumn_emulator, admin_client):
    html = admin_client.get(LIST, {"q": "nobody"}).content.decode()
    assert "No customer matches “nobody”." in html
    assert "this-page" not in html and "customers matching" not in html and "?q=nobody&amp;p=" not in html


def test_the_remote_pages_word_blanks_and_labels_alike(autumn_emulator, admin_client):
    autumn_emulator.add_customer(id="bare")
    listed = admin_client.get(LIST).content.decode()
    assert (
        '<td class="field-names">—</td>' in listed
        and '<td class="field-stripe autumn-blank">—</td>' in listed
    )
    page = admin_client.get(detail("bare")).content.decode()
    labels = re.findall(r'<th scope="row">([^<]*)</th>', page)
    assert labels == ["Customer id", "Name", "Email", "Environment", "Stripe id", "Fingerprint",
                      "Email receipts", "Created", "Local object"]  # fmt: skip
    assert '<td class="autumn-field-stripe_id">—</td>' in page
    assert '<td class="autumn-field-send_email_receipts">No</td>' in page


def test_the_delete_confirmation_is_the_admins_own(autumn_emulator, admin_client):
    autumn_emulator.add_customer(id="c1")
    page = admin_client.get(
        reverse("admin:autumn_django_remotecustomer_delete", args=["c1"])
    ).content.decode()
    crumbs = page[page.index('<div class="breadcrumbs">') : page.index("</div>", page.index("breadcrumbs"))]
    assert re.findall(r">([^<>&]+)</a>", crumbs) == ["Home", "Autumn", "Autumn customers", "c1"]
    assert "delete-confirmation" in page  # Django's styles: equal heights, the red button


# --- any customer source: users and teams side by side ------------------------------------


def test_the_mirror_list_links_a_users_row_to_the_users_page(
    autumn_emulator, admin_client, make_user, commit
):
    with commit():
        user = make_user("jane")
    row = row_html(admin_client.get(MIRROR).content.decode(), f">{user}</a>")
    url = reverse("admin:auth_user_change", args=[user.pk])
    assert f'<a href="{url}">jane</a><span class="autumn-quiet autumn-model">user</span>' in row


def test_the_old_user_admin_url_name_still_links_a_user(autumn_emulator, make_user):
    user = make_user("jane")
    assert user_admin_url(user) == object_admin_url(user) == reverse("admin:auth_user_change", args=[user.pk])


def test_the_mirror_list_names_a_team_not_in_the_admin_without_a_link(
    autumn_emulator, admin_client, make_team
):
    team = make_team("Acme")
    row = row_html(admin_client.get(MIRROR).content.decode(), f"team:{team.pk}")
    assert '<td class="field-object_link">Acme<span class="autumn-quiet autumn-model">team</span></td>' in row


def test_the_mirror_list_shows_a_blank_for_an_object_that_is_gone(
    autumn_emulator, admin_client, make_team, autumn_settings
):
    team = make_team("Gone")
    autumn_settings(DELETE_POLICY="keep")  # the row stays, unlinked
    team_pk = team.pk
    team.delete()
    row = row_html(admin_client.get(MIRROR).content.decode(), f"team:{team_pk}")
    assert '<td class="field-object_link">—</td>' in row


def test_a_row_of_a_model_no_longer_a_source_still_shows_its_object(
    autumn_emulator, admin_client, make_team, autumn_settings
):
    team = make_team("Acme")
    autumn_settings(CUSTOMER_SOURCES=["autumn_django.sources.UserSource"])
    row = row_html(admin_client.get(MIRROR).content.decode(), f"team:{team.pk}")
    assert '<td class="field-object_link">Acme<span class="autumn-quiet autumn-model">team</span></td>' in row


def test_the_model_filter_lists_the_sources_models_and_filters_by_one(
    autumn_emulator, admin_client, make_team
):
    team = make_team("Acme")
    page = admin_client.get(MIRROR).content.decode()
    choices = re.findall(r'<a href="\?model=([\w.]+)">([^<]*)</a>', page)
    assert choices == [("auth.user", "user"), ("teams.team", "team"), ("teams.workspace", "workspace")]
    teams_only = admin_client.get(MIRROR, {"model": "teams.team"}).content.decode()
    assert f"team:{team.pk}" in teams_only and f">{team.owner}</a>" not in teams_only
    users_only = admin_client.get(MIRROR, {"model": "auth.user"}).content.decode()
    assert f"team:{team.pk}" not in users_only and f">{team.owner}</a>" in users_only


def test_the_model_filter_is_hidden_when_users_are_the_only_source(
    autumn_emulator, admin_client, make_user, commit
):
    with commit():
        make_user("jane")
    assert "?model=" not in admin_client.get(MIRROR).content.decode()


def test_searching_the_mirror_by_a_username_finds_that_users_row(
    autumn_emulator, admin_client, make_team, make_user, commit
):
    make_team("Acme")
    with commit():  # a username that is neither the customer's name nor its email
        ada = make_user("ada", first_name="Augusta", last_name="King", email="countess@example.com")
    found = admin_client.get(MIRROR, {"q": "ada"})
    assert list(found.context["cl"].result_list) == [Customer.objects.of(ada).get()]


def test_searching_the_mirror_by_a_username_keeps_the_lists_filters(
    autumn_emulator, admin_client, make_team, make_user, commit
):
    make_team("Acme")
    with commit():
        make_user("ada", first_name="Augusta", last_name="King", email="countess@example.com")
    found = admin_client.get(MIRROR, {"q": "ada", "model": "teams.team"})
    assert list(found.context["cl"].result_list) == []


def test_the_mirror_page_shows_the_model_and_object_read_only(autumn_emulator, admin_client, make_team):
    team = make_team("Acme")
    row = Customer.objects.of(team).get()
    page = admin_client.get(reverse("admin:autumn_django_customer_change", args=[row.pk])).content.decode()
    assert re.search(r'<label>Model:</label>\s*<div class="readonly">team</div>', page)
    assert re.search(r'<label>Object:</label>\s*<div class="readonly">Acme</div>', page)


def test_the_remote_list_shows_a_teams_customer_with_its_team(autumn_emulator, admin_client, make_team):
    team = make_team("Acme")
    row = row_html(admin_client.get(LIST).content.decode(), f">team:{team.pk}</a>")
    assert '<td class="field-object">Acme<span class="autumn-quiet autumn-model">team</span></td>' in row


def test_the_remote_detail_names_a_teams_customers_team_and_its_mirror(
    autumn_emulator, admin_client, make_team
):
    team = make_team("Acme")
    page = admin_client.get(detail(f"team:{team.pk}")).content.decode()
    local = page[
        page.index('class="autumn-local">') : page.index("</td>", page.index('class="autumn-local">'))
    ]
    assert "Acme (team); its mirror:" in local and ">Synced</span>" in local


def test_link_or_import_of_a_teams_customer_makes_the_teams_row(
    autumn_emulator, admin_client, make_user, autumn_settings
):
    autumn_settings(CUSTOMER_SOURCES=EVERY_SOURCE)
    with disable_sync():
        team = Team.objects.create(name="Acme", owner=make_user("ada"))
    customer_id = f"team:{team.pk}"
    autumn_emulator.add_customer(id=customer_id, name="Made elsewhere", stripe_id="cus_Team1234")
    assert f"Link to Acme (team {team.pk})" in admin_client.get(detail(customer_id)).content.decode()
    response = admin_client.post(reverse("admin:autumn_django_remotecustomer_link", args=[customer_id]))
    assert response.status_code == 302
    row = Customer.objects.of(team).get()
    assert (row.state, row.customer_id, row.stripe_id) == ("synced", customer_id, "cus_Team1234")


def test_link_says_which_object_it_linked(autumn_emulator, admin_client, make_user, autumn_settings):
    autumn_settings(CUSTOMER_SOURCES=EVERY_SOURCE)
    with disable_sync():
        team = Team.objects.create(name="Acme", owner=make_user("ada"))
    autumn_emulator.add_customer(id=f"team:{team.pk}")
    url = reverse("admin:autumn_django_remotecustomer_link", args=[f"team:{team.pk}"])
    response = admin_client.post(url, follow=True)
    assert messages_of(response) == [("success", f"Linked team:{team.pk} to team {team.pk} (Acme).")]


def test_link_says_so_when_a_deleted_objects_row_still_holds_the_id(
    autumn_emulator, admin_client, make_user, autumn_settings
):
    autumn_settings(CUSTOMER_SOURCES=EVERY_SOURCE)
    with disable_sync():
        team = Team.objects.create(name="Acme", owner=make_user("ada"))
    customer_id = f"team:{team.pk}"
    content_type = sync.link_values(team)["content_type"]  # the row of a team deleted before
    Customer.objects.create(
        content_type=content_type, customer_id=customer_id, env="sandbox", state="deleting"
    )
    autumn_emulator.add_customer(id=customer_id)
    url = reverse("admin:autumn_django_remotecustomer_link", args=[customer_id])
    said = messages_of(admin_client.post(url, follow=True))
    assert said == [
        (
            "error",
            f"{customer_id} was not linked to team {team.pk} (Acme): the mirror row of a deleted object "
            "still holds it, waiting for Autumn to confirm the delete. Sync that row, then link again.",
        )
    ]
    assert not Customer.objects.of(team).exists()


def test_an_id_whose_object_maps_elsewhere_offers_no_link(
    autumn_emulator, admin_client, make_user, autumn_settings
):
    """``team:3`` looks like team 3's id, but team 3's mapping gives another:
    the page offers nothing to link, and a POST links nothing."""
    autumn_settings(CUSTOMER_SOURCES=EVERY_SOURCE)
    with disable_sync():
        team = Team.objects.create(name="Acme", owner=make_user("ada"))
    autumn_emulator.add_customer(id=f"team:{team.pk}")
    autumn_settings(
        CUSTOMER_SOURCES=["autumn_django.sources.UserSource", "tests.test_admin.RenamedTeamSource"]
    )
    assert "Link to" not in admin_client.get(detail(f"team:{team.pk}")).content.decode()
    url = reverse("admin:autumn_django_remotecustomer_link", args=[f"team:{team.pk}"])
    response = admin_client.post(url, follow=True)
    assert messages_of(response) == [("error", f"No local object has the customer id team:{team.pk}.")]
    assert not Customer.objects.of(team).exists()


def test_the_pages_queries_stay_bounded_with_users_and_teams(
    autumn_emulator, admin_client, make_team, django_assert_max_num_queries
):
    for number in range(10):
        make_team(f"Team {number}")  # and its owner: 20 customers of two models
    with django_assert_max_num_queries(7):  # one query for each model's objects on the page
        mirror = admin_client.get(MIRROR)
    with django_assert_max_num_queries(8):  # and one for the users a search matches
        admin_client.get(MIRROR, {"q": "owner"})
    with django_assert_max_num_queries(6):
        remote = admin_client.get(LIST)
    for page in (mirror.content.decode(), remote.content.decode()):
        assert page.count('<span class="autumn-quiet autumn-model">team</span>') == 10
        assert page.count('<span class="autumn-quiet autumn-model">user</span>') == 11  # the admin too


# --- plans, balances and flags in the mirror ---------------------------------------------


def change_page(row):
    return reverse("admin:autumn_django_customer_change", args=[row.pk])


def usernames(response):
    return sorted(row.source.username for row in response.context["cl"].result_list)


@pytest.fixture
def billed(autumn_emulator, make_user, commit):
    """``billed("ada", "pro")``: a synced user's row whose customer has
    these plans at Autumn, refreshed into the mirror (tables included)."""

    def make(username, *plan_ids):
        with commit():
            user = make_user(username)
        row = Customer.objects.of(user).get()
        for plan_id in plan_ids:
            autumn_emulator.add_plan(plan_id)
            autumn_emulator.attach(row.customer_id, plan_id)
        sync.refresh(row)
        return Customer.objects.get(pk=row.pk)

    return make


def plans_cell(page, username):
    return re.search(r'<td class="field-active_plans">.*?</td>', row_html(page, f">{username}</a>")).group()


def test_the_mirror_list_shows_a_customers_active_plan(autumn_emulator, admin_client, billed):
    billed("ada", "pro")
    billed("bob")
    page = admin_client.get(MIRROR).content.decode()
    assert (
        plans_cell(page, "ada") == '<td class="field-active_plans"><span class="autumn-plan">pro</span></td>'
    )
    assert plans_cell(page, "bob") == '<td class="field-active_plans">—</td>'


def test_the_mirror_list_leaves_out_an_expired_plan(autumn_emulator, admin_client, billed):
    row = billed("ada", "pro", "team")
    autumn_emulator.expire(row.customer_id, "pro")
    sync.refresh(row)
    page = admin_client.get(MIRROR).content.decode()
    assert (
        plans_cell(page, "ada") == '<td class="field-active_plans"><span class="autumn-plan">team</span></td>'
    )


def test_the_plan_filter_lists_the_active_plan_ids_and_filters_by_one(autumn_emulator, admin_client, billed):
    billed("ada", "pro")
    billed("bob", "team", "pro")
    gone = billed("cy", "legacy")
    autumn_emulator.expire(gone.customer_id, "legacy")
    sync.refresh(gone)
    page = admin_client.get(MIRROR).content.decode()
    assert re.findall(r'<a href="\?plan=([\w-]+)">', page) == ["pro", "team"]  # not the expired one
    assert usernames(admin_client.get(MIRROR, {"plan": "pro"})) == ["ada", "bob"]
    assert usernames(admin_client.get(MIRROR, {"plan": "team"})) == ["bob"]
    assert usernames(admin_client.get(MIRROR, {"plan": "legacy"})) == []


def test_the_plan_filter_lists_a_customer_holding_a_plan_twice_once(autumn_emulator, admin_client, billed):
    row = billed("ada")
    subscription = {"plan_id": "pro", "status": "active"}
    Customer.objects.filter(pk=row.pk).update(
        data={"subscriptions": [subscription], "purchases": [{"plan_id": "pro"}]}
    )
    billing.store([(row.pk, {"subscriptions": [subscription], "purchases": [{"plan_id": "pro"}]})])
    found = admin_client.get(MIRROR, {"plan": "pro"})
    assert usernames(found) == ["ada"]
    assert usernames(admin_client.get(MIRROR, {"plan": "pro", "q": "ada"})) == ["ada"]  # with a search too


def test_the_plan_filter_is_hidden_when_no_customer_has_a_plan(autumn_emulator, admin_client, billed):
    billed("ada")
    assert "?plan=" not in admin_client.get(MIRROR).content.decode()


def test_the_mirror_page_shows_a_canceled_subscriptions_dates(autumn_emulator, admin_client, billed):
    row = billed("ada", "pro")
    autumn_emulator.cancel(row.customer_id, "pro")
    sync.refresh(row)
    plan = CustomerPlan.objects.get(customer=row)
    page = admin_client.get(change_page(row)).content.decode()
    table = page[
        page.index('<table class="autumn-table autumn-plans">') : page.index(
            "</table>", page.index("autumn-plans")
        )
    ]
    cells = dict(re.findall(r'<td data-label="([^"]+)"(?: class="autumn-blank")?>(.*?)</td>', table))

    def day(moment):
        return f">{timezone.localtime(moment):%Y-%m-%d}</time>"

    assert cells["Plan"] == 'pro<span class="autumn-quiet">subscription</span>'
    assert cells["Status"] == '<span class="autumn-state autumn-plan-active">Active</span>'
    assert (
        day(plan.current_period_start) in cells["Current period"]
        and day(plan.current_period_end) in cells["Current period"]
    )
    assert day(plan.canceled_at) in cells["Canceled"]
    assert day(plan.expires_at) in cells["Expires"] and plan.expires_at == plan.current_period_end
    assert cells["Trial ends"] == "—"


def test_the_mirror_page_says_a_subscription_is_past_due(autumn_emulator, admin_client, billed):
    row = billed("ada")
    data = {**row.data, "subscriptions": [{"plan_id": "pro", "status": "active", "past_due": True}]}
    Customer.objects.filter(pk=row.pk).update(data=data)
    page = admin_client.get(change_page(row)).content.decode()
    assert '<span class="autumn-state autumn-past-due">Past due</span>' in page


def test_the_mirror_page_shows_a_plans_quantity_beside_its_kind(autumn_emulator, admin_client, billed):
    row = billed("ada")
    data = {
        **row.data,
        "purchases": [{"plan_id": "seats", "quantity": 3}, {"plan_id": "big", "quantity": 1e300}],
    }
    Customer.objects.filter(pk=row.pk).update(data=data)
    page = admin_client.get(change_page(row)).content.decode()
    assert 'seats<span class="autumn-quiet">purchase ×3</span>' in page
    assert 'big<span class="autumn-quiet">purchase ×1e+300</span>' in page


def test_the_mirror_page_shows_balances_and_flags(autumn_emulator, admin_client, billed):
    row = billed("ada")
    data = {
        **row.data,
        "balances": {
            "messages": {"granted": 100, "remaining": 40, "usage": 60},
            "seats": {"unlimited": True},
        },
        "flags": {"sso": {"plan_id": "pro"}},
    }
    Customer.objects.filter(pk=row.pk).update(data=data)
    page = admin_client.get(change_page(row)).content.decode()
    assert (
        '<tr class="autumn-balance">'
        '<td data-label="Feature">messages<span class="autumn-quiet">balance</span></td>'
        '<td data-label="Granted">100</td><td data-label="Used">60</td><td data-label="Remaining">40</td>'
    ) in page
    assert '<td data-label="Remaining">unlimited</td>' in page
    assert 'sso<span class="autumn-quiet">flag, from pro</span>' in page


def test_the_mirror_page_of_a_customer_with_no_billing_says_so(autumn_emulator, admin_client, billed):
    page = admin_client.get(change_page(billed("ada"))).content.decode()
    assert "No subscriptions or purchases." in page and "No balances or flags." in page


def test_the_mirror_lists_queries_stay_the_same_with_more_customers_on_plans(
    autumn_emulator, admin_client, billed, django_assert_num_queries
):
    """The plans column reads each row's ``data``, which the list loads
    anyway: one more customer on a plan costs no query; the filter's
    choices are one query, the filtered list one query more than none."""
    billed("ada", "pro")
    with CaptureQueriesContext(connection) as few:
        admin_client.get(MIRROR)
    with CaptureQueriesContext(connection) as few_filtered:
        admin_client.get(MIRROR, {"plan": "pro"})
    for number in range(10):
        billed(f"user{number}", "pro", "team")
    with django_assert_num_queries(len(few)):
        many = admin_client.get(MIRROR)
    with django_assert_num_queries(len(few_filtered)):
        admin_client.get(MIRROR, {"plan": "pro"})
    assert many.content.decode().count('<span class="autumn-plan">team</span>') == 10


def test_the_mirror_page_reads_billing_with_no_query(autumn_emulator, admin_client, billed):
    row, other = billed("ada", "pro"), billed("bob")
    with CaptureQueriesContext(connection) as without:
        admin_client.get(change_page(other))
    with CaptureQueriesContext(connection) as with_plans:
        page = admin_client.get(change_page(row)).content.decode()
    assert len(with_plans) == len(without) and "autumn-plan-active" in page
