from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from rooms import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include("rooms.api_urls")),
    path("accounts/signup/", views.SignupView.as_view(), name="signup"),
    # Log in and out only: accounts have no e-mail address, so no password reset by mail.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("rooms.urls")),
]
