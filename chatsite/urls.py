from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from rooms import login_throttle, views

# A path no view answers: under /api/ the API's JSON 404 body, elsewhere Django's page.
handler404 = "rooms.views.page_not_found"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    # The admin's own log-in page, throttled like the site's (before admin.site.urls, which
    # would answer it unthrottled).
    path("admin/login/", login_throttle.throttled_login(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/", include("rooms.api_urls")),
    path("accounts/signup/", views.SignupView.as_view(), name="signup"),
    # Log in and out, change the password: accounts have no e-mail address, so no password reset by mail.
    # Throttled per client address and per account (rooms/login_throttle.py).
    path("accounts/login/", login_throttle.throttled_login(auth_views.LoginView.as_view()), name="login"),
    # Log-out and password change end sessions: their sockets close on every node (rooms.views).
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("", include("rooms.urls")),
]
