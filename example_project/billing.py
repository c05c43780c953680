"""Teams as Autumn customers, beside users: the team's name, billed to its
owner's email, with its member count and its owner in metadata.

Listed in settings.AUTUMN["CUSTOMER_SOURCES"]. A team's save syncs its
customer after the commit, as a user's does; ``depends_on`` says which
other changes alter a team's customer: its owner's email or username, and
anyone joining or leaving it.
"""

from django.conf import settings

from autumn_django.sources import CustomerSource, Dependency

from .models import Membership, Team


class TeamSource(CustomerSource):
    model = Team  # customer ids "team:<pk>"
    changed_fields = ("created",)  # for autumn_sync --since
    depends_on = [
        # The owner's email and username are the team's: changing them
        # re-syncs the teams the user owns; a login (a save with
        # update_fields=["last_login"]) does not.
        Dependency(
            settings.AUTH_USER_MODEL,
            lambda user: Team.objects.filter(owner=user),
            fields=("email", "username"),
        ),
        # Joining or leaving changes the member count: a Membership saved or
        # deleted, and team.members.add(), .remove() and .clear(), re-sync
        # the team it belongs to.
        Dependency(Membership, lambda membership: Team.objects.filter(pk=membership.team_id)),
    ]

    def customer_data(self, team):
        return {
            "name": team.name,
            "email": team.owner.email or None,
            "metadata": {"members": team.memberships.count(), "owner": team.owner.get_username()},
        }

    def get_queryset(self):
        return Team.objects.select_related("owner")
