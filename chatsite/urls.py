from django.contrib import admin
from django.urls import include, path

from rooms import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/", include("rooms.api_urls")),
    path("accounts/signup/", views.SignupView.as_view(), name="signup"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("rooms.urls")),
]
