from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("profile/", views.profile, name="profile"),
    path("billing/", views.billing, name="billing"),
    path("billing/refresh/", views.refresh, name="billing-refresh"),
    path("teams/new/", views.team_new, name="team-new"),
    path("teams/<int:pk>/members/", views.team_add_member, name="team-add-member"),
    path("teams/<int:pk>/refresh/", views.team_refresh, name="team-refresh"),
    path("admin/", admin.site.urls),
    path("autumn/", include("autumn_django.urls")),  # Autumn's webhooks: /autumn/webhooks/
]
