"""The suite's customer sources: teams (billed to their owner's email, with
the member count in metadata) and workspaces (the defaults)."""

from django.conf import settings

from autumn_django.sources import CustomerSource, Dependency

from .models import Membership, Team, Workspace


class TeamSource(CustomerSource):
    model = Team
    depends_on = [
        # The owner's email is the team's: an email change re-syncs the teams
        # the user owns; a login (update_fields=["last_login"]) does not.
        Dependency(settings.AUTH_USER_MODEL, lambda user: Team.objects.filter(owner=user), fields=("email",)),
        Dependency(Membership, lambda membership: Team.objects.filter(pk=membership.team_id)),
    ]

    def customer_data(self, team):
        return {
            "name": team.name,
            "email": team.owner.email or None,
            "metadata": {"members": team.memberships.count()},
        }

    def get_queryset(self):
        return Team.objects.select_related("owner")


class WorkspaceSource(CustomerSource):
    model = "teams.Workspace"
    depends_on = [Dependency(Workspace.tags.through)]

    def customer_data(self, workspace):
        data = super().customer_data(workspace)
        data["metadata"]["tags"] = sorted(tag.name for tag in workspace.tags.all())
        return data


#: CUSTOMER_SOURCES with users, teams and workspaces all billed.
EVERY_SOURCE = [
    "autumn_django.sources.UserSource",
    "tests.teams.billing.TeamSource",
    "tests.teams.billing.WorkspaceSource",
]
