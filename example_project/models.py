"""Teams: a second kind of Autumn customer beside users (see billing.py for
how a team becomes one). A team has an owner, who pays, and members."""

from django.conf import settings
from django.db import models


class Team(models.Model):
    name = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="teams_owned")
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams_joined"
    )
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="example_membership_once_per_team")
        ]
