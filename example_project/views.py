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
from django.views.decorators.http import require_POST

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
