"""The example site: sign up, log in, edit a profile, create a team, see
the Autumn customers the profile and the teams are mirrored to, with their
plans and balances as the mirror last stored them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.db.models import Count, Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from autumn_django import sync
from autumn_django.exceptions import AutumnError
from autumn_django.models import Customer, CustomerFeature, CustomerPlan

from .models import Membership, Team


class SignUpForm(UserCreationForm):
    email = forms.EmailField()

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")


class ProfileForm(forms.ModelForm):
    class Meta:
        model = get_user_model()
        fields = ("first_name", "last_name", "email")


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ("name",)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        User = get_user_model()
        try:
            self.user = User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            raise forms.ValidationError(f"No user is called {username}.") from None
        return username


#: The site's icon: an orange leaf. Browsers ask for /favicon.ico on every
#: page, the admin's included; answering it keeps their consoles free of 404s.
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="7" fill="#c2571a"/>'
    '<path d="M8 24C8 13 15 7 25 7c0 10-6 17-17 17z" fill="#fbe3c8"/>'
    '<path d="M8 24l10-10" stroke="#c2571a" stroke-width="2" stroke-linecap="round"/>'
    "</svg>"
)


@require_GET
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponse:
    return HttpResponse(FAVICON, content_type="image/svg+xml")


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "example/home.html", {"customers": Customer.objects.count()})


def signup(request: HttpRequest) -> HttpResponse:
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()  # the signal mirrors the new user to Autumn after commit
        login(request, user)
        messages.success(request, "Welcome! Your Autumn customer is on the billing page.")
        return redirect("billing")
    return render(request, "example/signup.html", {"form": form})


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Saved. Autumn follows once the change commits.")
        return redirect("billing")
    return render(request, "example/profile.html", {"form": form})


@login_required
def billing(request: HttpRequest) -> HttpResponse:
    """The user's customer and each of their teams', with the plans and
    balances the mirror holds: read from the database, never from Autumn
    (a webhook, or the Refresh button, brings Autumn's changes)."""
    row = with_billing(Customer.objects.of(request.user)).first()
    return render(
        request,
        "example/billing.html",
        {"row": row, **billing_of(row), "teams": team_sections(request.user)},
    )


def with_billing(rows: Any) -> Any:
    """``rows`` with their plans (those not expired) and balances, in two
    queries for any number of rows."""
    return rows.prefetch_related(
        Prefetch(
            "plans",
            queryset=CustomerPlan.objects.exclude(status="expired").order_by("-kind", "started_at", "pk"),
            to_attr="shown_plans",
        ),
        Prefetch(
            "features",
            queryset=CustomerFeature.objects.filter(kind=CustomerFeature.Kind.BALANCE).order_by("feature_id"),
            to_attr="shown_balances",
        ),
    )


def billing_of(row: Customer | None) -> dict[str, Any]:
    """What the page shows of a row's billing: ``plans``, subscriptions
    first, then purchases, a plan bought several times shown once with its
    count; and ``balances``."""
    if row is None:
        return {"plans": [], "balances": []}
    plans: list[dict[str, Any]] = []
    bought: dict[str, dict[str, Any]] = {}
    for plan in row.shown_plans:  # type: ignore[attr-defined]
        if plan.kind == CustomerPlan.Kind.PURCHASE:
            if plan.plan_id in bought:
                bought[plan.plan_id]["count"] += 1
                continue
            bought[plan.plan_id] = entry = {"plan": plan, "count": 1}
        else:
            entry = {"plan": plan, "count": 1}
        plans.append(entry)
    return {"plans": plans, "balances": row.shown_balances}  # type: ignore[attr-defined]


def team_sections(user: Any) -> list[dict[str, Any]]:
    """The teams ``user`` is in, each with its mirror row (None before its
    first sync), plans and balances, in five queries whatever their number."""
    teams = (
        Team.objects.filter(pk__in=Membership.objects.filter(user=user).values("team"))
        .select_related("owner")
        .annotate(member_count=Count("memberships"))
        .order_by("name", "pk")
    )
    mirrored = with_billing(
        Customer.objects.of_model(Team).filter(object_id__in=[str(team.pk) for team in teams])
    )
    rows = {row.object_id: row for row in mirrored}
    return [
        {
            "team": team,
            "row": rows.get(str(team.pk)),
            **billing_of(rows.get(str(team.pk))),
            "prefix": f"team-{team.pk}-",
        }
        for team in teams
    ]


@login_required
@require_POST
def refresh(request: HttpRequest) -> HttpResponse:
    """Read the user's customer from Autumn now and store it in the mirror."""
    return refreshed(request, Customer.objects.of(request.user).first(), "You have no Autumn customer yet.")


@login_required
def team_new(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # One transaction: Autumn hears of the team after the commit, with
        # its owner already counted as a member.
        with transaction.atomic():
            team = form.save(commit=False)
            team.owner = request.user
            team.save()
            team.members.add(request.user)
        messages.success(request, f"Team {team.name} created: its Autumn customer is below.")
        return redirect("billing")
    return render(request, "example/team_new.html", {"form": form})


@login_required
@require_POST
def team_add_member(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner adds a user by username; the team's customer (its member
    count) follows after the commit."""
    team = get_object_or_404(Team, pk=pk, owner=request.user)
    form = MemberForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors["username"]))
    elif team.members.filter(pk=form.user.pk).exists():
        messages.info(request, f"{form.user.get_username()} is already in {team.name}.")
    else:
        team.members.add(form.user)
        messages.success(request, f"{form.user.get_username()} joined {team.name}.")
    return redirect("billing")


@login_required
@require_POST
def team_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    """Read a team's customer from Autumn now (any member may)."""
    team = get_object_or_404(Team, pk=pk, memberships__user=request.user)
    return refreshed(request, Customer.objects.of(team).first(), f"{team.name} has no Autumn customer yet.")


def refreshed(request: HttpRequest, row: Customer | None, missing: str) -> HttpResponse:
    """Read ``row``'s customer from Autumn and keep it on the row; back to
    the billing page with what happened."""
    if row is None:
        messages.error(request, missing)
        return redirect("billing")
    try:
        sync.refresh(row)
    except AutumnError as error:
        messages.error(request, f"Autumn: {error}")
        return redirect("billing")
    messages.success(request, "Refreshed from Autumn.")
    return redirect("billing")
