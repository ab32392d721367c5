from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from rooms import login_throttle, views

# A path no view answers: under /api/ the API's JSON 404 body, elsewhere Django's page.
handler404 = "rooms.views.page_not_found"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("favicon.ico", views.favicon, name="favicon"),
    # The admin's own log-in page, throttled like the site's (before admin.site.urls, which
    # would answer it unthrottled).
    path("admin/login/", login_throttle.throttled_login(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/", include("rooms.api_urls")),
    # The language switch in every page's footer posts here (Django's set_language: the language
    # cookie, then back to the page), and the page scripts' strings in the page's language
    # (djangojs catalogs, cacheable by version: gettext, ngettext, interpolate for
    # static/rooms/room/i18n.js).
    path("i18n/", include("django.conf.urls.i18n")),
    path("jsi18n/", views.ScriptCatalogView.as_view(), name="javascript-catalog"),
    path("accounts/signup/", views.SignupView.as_view(), name="signup"),
    # Throttled per client address and per account (rooms/login_throttle.py).
    path("accounts/login/", login_throttle.throttled_login(auth_views.LoginView.as_view()), name="login"),
    # Log-out and password change end sessions: their sockets close on every node (rooms.views).
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    # Password reset by a mailed link (EMAIL_URL; the address is set on the settings page), the
    # request throttled per client address (PASSWORD_RESET_RATE).
    path("accounts/password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "accounts/password/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("", include("rooms.urls")),
]
