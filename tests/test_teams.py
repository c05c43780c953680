"""Teams as customers: a team (integer key) and a workspace (UUID key)
registered beside users, each synced through the same path as a user."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from autumn_django import sources, sync
from autumn_django.models import Customer
from autumn_django.signals import disable_sync
from tests.teams.billing import EVERY_SOURCE, TeamSource
from tests.teams.models import Membership, Tag, Team, Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def every_source(autumn_settings):
    autumn_settings(CUSTOMER_SOURCES=EVERY_SOURCE)


@pytest.fixture
def owner(make_user, commit):
    with commit():
        return make_user("olive")


def make_team(owner, name="Acme", commit=None, members=()):
    team = Team.objects.create(name=name, owner=owner)
    for member in (owner, *members):
        Membership.objects.create(team=team, user=member)
    return team


def routes(emulator, since=0):
    return [entry.route for entry in emulator.requests()[since:]]


# --- create, change, no-op ----------------------------------------------------------------


def test_a_new_team_becomes_a_customer_with_its_owners_email(autumn_emulator, owner, commit):
    with commit():
        team = make_team(owner)
    remote = autumn_emulator.customer(f"team:{team.pk}")
    assert (remote["name"], remote["email"], remote["metadata"]) == (
        "Acme",
        "olive@example.com",
        {"members": 1},
    )
    row = Customer.objects.of(team).get()
    assert (row.state, row.customer_id, row.source) == ("synced", f"team:{team.pk}", team)


def test_the_user_stays_a_customer_of_their_own_beside_the_team(autumn_emulator, owner, commit):
    with commit():
        make_team(owner)
    assert autumn_emulator.customer(str(owner.pk))["email"] == "olive@example.com"
    assert Customer.objects.count() == 2


def test_renaming_a_team_updates_its_customer(autumn_emulator, owner, commit):
    with commit():
        team = make_team(owner)
    before = len(autumn_emulator.requests())
    with commit():
        team.name = "Acme Ltd"
        team.save()
    assert routes(autumn_emulator, before) == ["customers.update"]
    assert autumn_emulator.customer(f"team:{team.pk}")["name"] == "Acme Ltd"


def test_saving_a_team_unchanged_sends_nothing(autumn_emulator, owner, commit, django_assert_num_queries):
    with commit():
        team = make_team(owner)
    before = len(autumn_emulator.requests())
    with commit():
        # The team's own UPDATE, its mirror row (the payload is the one
        # Autumn holds, so no task), and the member count its mapping reads.
        with django_assert_num_queries(3):
            team.save()
    assert routes(autumn_emulator, before) == []


# --- dependencies ---------------------------------------------------------------------------


def test_the_owners_email_change_updates_the_teams_they_own(autumn_emulator, owner, commit, make_user):
    with commit():
        owned = make_team(owner, "Owned")
        other = make_team(make_user("otto"), "Other", members=[owner])
    with commit():
        owner.email = "olive@new.example.com"
        owner.save()
    assert autumn_emulator.customer(f"team:{owned.pk}")["email"] == "olive@new.example.com"
    assert autumn_emulator.customer(str(owner.pk))["email"] == "olive@new.example.com"
    assert autumn_emulator.customer(f"team:{other.pk}")["email"] == "otto@example.com"


def test_the_owners_login_neither_reads_nor_syncs_their_teams(
    autumn_emulator, owner, commit, django_assert_num_queries
):
    with commit():
        make_team(owner)
    before = len(autumn_emulator.requests())
    with commit(), django_assert_num_queries(2):  # the user's UPDATE and its mirror row
        owner.save(update_fields=["last_login"])
    assert routes(autumn_emulator, before) == []


def test_a_new_member_updates_the_member_count_of_that_team_only(autumn_emulator, owner, commit, make_user):
    with commit():
        joined = make_team(owner, "Joined")
        untouched = make_team(owner, "Untouched")
        member = make_user("mia")
    before = len(autumn_emulator.requests())
    with commit():
        Membership.objects.create(team=joined, user=member)
    assert autumn_emulator.customer(f"team:{joined.pk}")["metadata"] == {"members": 2}
    assert [entry.body.get("customer_id") for entry in autumn_emulator.requests()[before:]] == [
        f"team:{joined.pk}"
    ]
    assert autumn_emulator.customer(f"team:{untouched.pk}")["metadata"] == {"members": 1}


def test_a_member_leaving_updates_the_member_count(autumn_emulator, owner, commit, make_user):
    with commit():
        team = make_team(owner, members=[make_user("mia")])
    with commit():
        Membership.objects.filter(team=team).exclude(user=owner).get().delete()
    assert autumn_emulator.customer(f"team:{team.pk}")["metadata"] == {"members": 1}


def test_a_many_to_many_change_resyncs_the_object_it_belongs_to(autumn_emulator, commit):
    with commit():
        workspace = Workspace.objects.create(name="Studio")
        tag = Tag.objects.create(name="design")
    with commit():
        workspace.tags.add(tag)
    assert autumn_emulator.customer(f"workspace:{workspace.pk}")["metadata"]["tags"] == ["design"]


# --- delete, rollback -----------------------------------------------------------------------


def test_deleting_a_team_deletes_its_customer_and_its_row(autumn_emulator, owner, commit):
    with commit():
        team = make_team(owner)
    customer_id = f"team:{team.pk}"
    with commit():
        team.delete()
    assert autumn_emulator.customer(customer_id) is None
    assert not Customer.objects.filter(customer_id=customer_id).exists()
    assert Customer.objects.of(owner).get().state == "synced"  # the owner is untouched


def test_deleting_the_owner_deletes_the_owners_teams_customers_too(autumn_emulator, owner, commit, make_user):
    """The cascade removes the memberships after the teams were marked
    deleting: their dependency must not bring the teams' customers back."""
    with commit():
        teams = [make_team(owner, "One", members=[make_user("mia")]), make_team(owner, "Two")]
    ids = [f"team:{team.pk}" for team in teams]
    with commit():
        owner.delete()
    assert [autumn_emulator.customer(customer_id) for customer_id in ids] == [None, None]
    assert Customer.objects.filter(customer_id__in=ids).count() == 0
    assert autumn_emulator.customer(f"team:{teams[0].pk}") is None


def delete_without_signals(team):
    """As raw SQL does: the team and its memberships gone, no signal sent."""
    Membership.objects.filter(team=team)._raw_delete(Membership.objects.db)
    Team.objects.filter(pk=team.pk)._raw_delete(Team.objects.db)


def test_a_team_deleted_with_raw_sql_is_deleted_at_its_next_sync(autumn_emulator, owner, commit):
    with commit():
        team = make_team(owner)
    row = Customer.objects.of(team).get()
    delete_without_signals(team)
    sync.sync(row.pk)
    assert autumn_emulator.customer(f"team:{team.pk}") is None
    assert not Customer.objects.filter(pk=row.pk).exists()


def test_a_deleted_team_keeps_its_row_unlinked_until_autumn_confirms(autumn_emulator, owner, commit):
    with commit():
        team = make_team(owner)
    autumn_emulator.fail_next(1, "customers.delete", status=400, code="invalid_request")
    customer_id = f"team:{team.pk}"
    with commit():
        team.delete()
    row = Customer.objects.get(customer_id=customer_id)
    assert (row.state, row.object_id, row.source) == ("deleting", None, None)
    run("--retry")
    assert not Customer.objects.filter(pk=row.pk).exists()


def test_a_rolled_back_team_leaves_no_row_and_sends_nothing(autumn_emulator, owner, commit):
    before = len(autumn_emulator.requests())
    with commit(), pytest.raises(RuntimeError), transaction.atomic():
        make_team(owner)
        raise RuntimeError("rolled back")
    assert not Team.objects.exists()
    assert Customer.objects.count() == 1  # the owner's
    assert routes(autumn_emulator, before) == []


# --- keys -----------------------------------------------------------------------------------


def test_a_uuid_keyed_model_is_a_customer_created_and_deleted(autumn_emulator, commit):
    with commit():
        workspace = Workspace.objects.create(name="Studio")
    assert isinstance(workspace.pk, uuid.UUID)
    customer_id = f"workspace:{workspace.pk}"
    assert autumn_emulator.customer(customer_id)["name"] == "Studio"
    assert Customer.objects.of(workspace).get().object_id == str(workspace.pk)
    with commit():
        workspace.delete()
    assert autumn_emulator.customer(customer_id) is None


def test_ids_of_different_models_never_meet(autumn_emulator, owner, commit):
    with commit():
        team = Team.objects.create(pk=owner.pk, name="Acme", owner=owner)  # the same key as its owner
    assert {row.customer_id for row in Customer.objects.all()} == {str(owner.pk), f"team:{team.pk}"}


def test_a_collision_fails_the_second_row_naming_the_first_and_shares_nothing(
    autumn_emulator, owner, commit, autumn_settings, make_user
):
    with commit():
        team = make_team(owner)
    # A site's CUSTOMER_ID that gives a user the id its team already has.
    autumn_settings(CUSTOMER_ID=lambda user: f"team:{team.pk}" if user.username == "clash" else str(user.pk))
    with commit():
        clash = make_user("clash")
    row = Customer.objects.of(clash).get()
    assert row.state == "failed"
    assert f"already mirrored by team {team.pk}" in row.last_error
    assert autumn_emulator.customer(f"team:{team.pk}")["email"] == "olive@example.com"


# --- which sources ----------------------------------------------------------------------------


def test_teams_can_be_billed_instead_of_users(autumn_emulator, autumn_settings, make_user, commit):
    autumn_settings(CUSTOMER_SOURCES=["tests.teams.billing.TeamSource"])
    with commit():
        team = make_team(make_user("olive"))
    assert [customer["id"] for customer in autumn_emulator.customers()] == [f"team:{team.pk}"]
    assert Customer.objects.count() == 1


def test_a_model_that_is_not_a_source_costs_no_query(owner, django_assert_num_queries):
    with django_assert_num_queries(1):  # its own INSERT
        Tag.objects.create(name="design")


def test_an_unregistered_object_is_refused_with_what_to_do():
    with pytest.raises(Exception, match="CUSTOMER_SOURCES"):
        sources.registry().for_object(Tag(name="x"))


# --- autumn_sync ------------------------------------------------------------------------------


@pytest.fixture
def quiet_objects(make_user):
    """Two users, two teams and a workspace saved with sync off: autumn_sync's work."""
    with disable_sync():
        olive, otto = make_user("olive2"), make_user("otto")
        teams = [make_team(olive, "One"), make_team(otto, "Two")]
        workspace = Workspace.objects.create(name="Studio")
    return [olive, otto], teams, workspace


def run(*args):
    out = io.StringIO()
    call_command("autumn_sync", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_autumn_sync_walks_every_source(autumn_emulator, quiet_objects):
    users, teams, workspace = quiet_objects
    assert "created 5" in run()
    ids = {customer["id"] for customer in autumn_emulator.customers()}
    assert ids == {
        *(str(user.pk) for user in users),
        *(f"team:{team.pk}" for team in teams),
        f"workspace:{workspace.pk}",
    }
    assert autumn_emulator.customer(f"team:{teams[1].pk}")["metadata"] == {"members": 1}
    assert "unchanged 5" in run()


def test_autumn_sync_model_picks_one_source(autumn_emulator, quiet_objects):
    _, teams, _ = quiet_objects
    assert "created 2" in run("--model", "teams.Team")
    assert {customer["id"] for customer in autumn_emulator.customers()} == {
        f"team:{team.pk}" for team in teams
    }


def test_autumn_sync_model_and_ids_pick_objects(autumn_emulator, quiet_objects):
    _, teams, _ = quiet_objects
    run("--model", "teams.team", "--ids", str(teams[0].pk))
    assert [customer["id"] for customer in autumn_emulator.customers()] == [f"team:{teams[0].pk}"]


def test_autumn_sync_names_the_sources_when_a_model_is_not_one(quiet_objects):
    with pytest.raises(CommandError, match="registered: auth.user, teams.team, teams.workspace"):
        run("--model", "teams.Tag")


def test_autumn_sync_check_reports_a_missing_team_by_name(autumn_emulator, quiet_objects):
    _, teams, _ = quiet_objects
    run("--model", "auth.user")  # the teams are never pushed
    out = io.StringIO()
    with pytest.raises(CommandError, match="Drift found"):
        call_command("autumn_sync", "--check", stdout=out)
    assert f"missing   team {teams[0].pk} -> team:{teams[0].pk}" in out.getvalue()


def test_autumn_sync_pull_links_team_customers_made_elsewhere(autumn_emulator, quiet_objects):
    _, teams, _ = quiet_objects
    autumn_emulator.add_customer(id=f"team:{teams[0].pk}", name="Made in the dashboard")
    assert "linked 1" in run("--pull")
    row = Customer.objects.of(teams[0]).get()
    assert (row.state, row.name) == ("synced", "Made in the dashboard")


def test_autumn_sync_prune_keeps_every_sources_customers(autumn_emulator, quiet_objects):
    run()
    autumn_emulator.add_customer(id="nobody")
    assert "deleted 1" in run("--prune", "--no-input")
    assert len(autumn_emulator.customers()) == 5


def test_autumn_sync_enqueue_makes_chunks_per_source(autumn_emulator, quiet_objects):
    assert "Enqueued 3 chunk tasks" in run("--enqueue")
    assert len(autumn_emulator.customers()) == 5


def test_a_team_saved_and_given_members_in_one_transaction_is_pushed_once(autumn_emulator, owner, commit):
    before = len(autumn_emulator.requests())
    with commit(), transaction.atomic():
        make_team(owner)
    assert routes(autumn_emulator, before) == ["customers.get_or_create"]


def test_autumn_sync_retry_pushes_a_team_left_pending(autumn_emulator, owner, commit):
    autumn_emulator.fail_next(1, "customers.get_or_create", status=400, code="invalid_request")
    with commit(), transaction.atomic():
        team = make_team(owner)
    assert Customer.objects.of(team).get().state == "failed"
    Customer.objects.of(team).update(state="pending")  # as after the site fixed the cause
    run("--retry")
    assert Customer.objects.of(team).get().state == "synced"


# --- settings -------------------------------------------------------------------------------


def test_source_problems_name_what_to_fix(autumn_settings):
    autumn_settings(
        CUSTOMER_SOURCES=[
            "tests.teams.billing.Missing",
            "tests.teams.models.Team",
            "tests.teams.billing.TeamSource",
            "tests.teams.billing.TeamSource",
        ]
    )
    messages = [message for message, _ in sources.source_problems()]
    assert "cannot be imported" in messages[0]
    assert "not a CustomerSource subclass" in messages[1]
    assert "two sources for teams.team" in messages[2]


def test_two_sources_with_one_id_prefix_are_an_error(autumn_settings):
    class OtherTeams(TeamSource):
        model = "teams.Workspace"
        id_prefix = "team"

    autumn_settings(CUSTOMER_SOURCES=[TeamSource, OtherTeams])
    [(message, hint)] = sources.source_problems()
    assert "the same id prefix 'team'" in message and "id_prefix" in hint


def test_the_system_check_reports_a_broken_source(autumn_settings):
    from django.core.management import call_command as command

    autumn_settings(CUSTOMER_SOURCES=["tests.teams.billing.Missing"])
    with pytest.raises(Exception, match="autumn_django.E003"):
        command("check")


def test_link_values_use_the_text_of_the_key(owner):
    values = sync.link_values(owner)
    assert values["object_id"] == str(owner.pk) and values["content_type"].model == "user"


def test_a_uuid_key_given_as_capital_hex_is_the_same_object(autumn_emulator, commit):
    key = uuid.uuid4()
    with commit():
        Workspace.objects.create(id=key.hex.upper(), name="Studio")
    with commit():
        again = Workspace.objects.get(pk=key)
        again.name = "Studio 2"
        again.save()
    assert list(Customer.objects.values_list("object_id", "state")) == [(str(key), "synced")]
    assert autumn_emulator.customer(f"workspace:{key}")["name"] == "Studio 2"


def test_autumn_sync_deletes_the_customer_of_a_team_deleted_without_signals(autumn_emulator, owner, commit):
    with commit():
        team = make_team(owner)
    customer_id = f"team:{team.pk}"
    delete_without_signals(team)
    assert "deleted 1" in run()
    assert autumn_emulator.customer(customer_id) is None
    assert not Customer.objects.filter(customer_id=customer_id).exists()


def test_autumn_sync_retry_deletes_a_pending_row_whose_team_is_gone(autumn_emulator, owner, commit):
    with commit():
        team = make_team(owner)
    row = Customer.objects.of(team).get()
    delete_without_signals(team)
    Customer.objects.filter(pk=row.pk).update(state="pending")
    assert "deleted 1" in run("--retry")
    assert not Customer.objects.filter(pk=row.pk).exists()


def test_a_team_left_out_of_its_sources_queryset_is_not_taken_for_deleted(
    autumn_emulator, owner, commit, monkeypatch
):
    with commit():
        team = make_team(owner)
    monkeypatch.setattr(TeamSource, "get_queryset", lambda self: Team.objects.none())
    assert "unchanged" in run() and autumn_emulator.customer(f"team:{team.pk}") is not None
    assert Customer.objects.of(team).get().state == "synced"


def test_with_keep_a_deleted_team_leaves_its_row_unlinked_and_no_failed_twin(
    autumn_emulator, owner, commit, make_user, autumn_settings
):
    autumn_settings(DELETE_POLICY="keep")
    with commit():
        team = make_team(owner, members=[make_user("mia")])
    customer_id = f"team:{team.pk}"
    with commit():
        team.delete()
    rows = list(
        Customer.objects.filter(customer_id__contains="team").values_list("customer_id", "object_id", "state")
    )
    assert rows == [(customer_id, None, "synced")]
    assert autumn_emulator.customer(customer_id) is not None  # kept, as asked


def test_a_proxy_models_save_is_seen(autumn_emulator, owner, commit):
    from tests.teams.models import TeamProxy

    with commit():
        team = make_team(owner)
    with commit():
        proxy = TeamProxy.objects.get(pk=team.pk)
        proxy.name = "Renamed through a proxy"
        proxy.save()
    assert autumn_emulator.customer(f"team:{team.pk}")["name"] == "Renamed through a proxy"


def test_clearing_a_many_to_many_from_the_other_side_resyncs_the_customers(autumn_emulator, commit):
    with commit():
        workspace = Workspace.objects.create(name="Studio")
        tag = Tag.objects.create(name="design")
        workspace.tags.add(tag)
    assert autumn_emulator.customer(f"workspace:{workspace.pk}")["metadata"]["tags"] == ["design"]
    with commit():
        tag.workspace_set.clear()
    assert autumn_emulator.customer(f"workspace:{workspace.pk}")["metadata"]["tags"] == []


def test_a_check_of_one_model_does_not_call_the_others_customers_orphans(autumn_emulator, quiet_objects):
    run()
    call_command("autumn_sync", "--check", "--model", "teams.Team", stdout=io.StringIO())  # exits 0: no drift
