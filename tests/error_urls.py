"""chatsite.urls plus ``/test-error/``, which raises (tests/error_settings.py)."""

from django.urls import path

from chatsite.urls import urlpatterns as chatsite_urlpatterns


def fail(request):
    raise RuntimeError("test error for Sentry")


urlpatterns = [path("test-error/", fail), *chatsite_urlpatterns]
