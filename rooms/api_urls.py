from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from . import api

app_name = "api"

router = SimpleRouter()
router.register("rooms", api.RoomViewSet, basename="room")

room_router = SimpleRouter()
room_router.register("messages", api.MessageViewSet, basename="message")
room_router.register("members", api.MemberViewSet, basename="member")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI from drf-spectacular-sidecar's static files; its start-up script is served as a
    # file too (``/api/docs/?script=``), as the Content-Security-Policy allows no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("auth/token/", api.TokenView.as_view(), name="token"),
    path("dms/", api.DirectMessageView.as_view(), name="dms"),
    path("me/settings/", api.MySettingsView.as_view(), name="my-settings"),
    path("mentions/", api.MentionsView.as_view(), name="mentions"),
    path("search/", api.SearchView.as_view(), name="search"),
    path(
        "attachments/<int:attachment_id>/thumbnail/",
        api.AttachmentThumbnailView.as_view(),
        name="attachment-thumbnail",
    ),
    path(
        "attachments/<int:attachment_id>/<path:name>", api.AttachmentDownloadView.as_view(), name="attachment"
    ),
    path("rooms/<str:room_slug>/attachments/", api.AttachmentUploadView.as_view(), name="attachment-upload"),
    path("", include(router.urls)),
    path("rooms/<str:room_slug>/", include(room_router.urls)),
    re_path(r"", api.not_found),
]
