"""The example site: sign up, log in, edit a profile, see the Autumn
customer the profile is mirrored to."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from autumn_django import sync
from autumn_django.exceptions import AutumnError
from autumn_django.models import Customer


class SignUpForm(UserCreationForm):
    email = forms.EmailField()

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")


class ProfileForm(forms.ModelForm):
    class Meta:
        model = get_user_model()
        fields = ("first_name", "last_name", "email")


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
    row = Customer.objects.filter(user=request.user).first()
    return render(request, "example/billing.html", {"row": row})


@login_required
@require_POST
def refresh(request: HttpRequest) -> HttpResponse:
    """Read the customer from Autumn now and store it in the mirror."""
    row = Customer.objects.filter(user=request.user).first()
    if row is None:
        messages.error(request, "You have no Autumn customer yet.")
        return redirect("billing")
    try:
        sync.refresh(row)
    except AutumnError as error:
        messages.error(request, f"Autumn: {error}")
        return redirect("billing")
    messages.success(request, "Refreshed from Autumn.")
    return redirect("billing")
