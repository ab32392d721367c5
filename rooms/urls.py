from django.urls import path

from . import views

app_name = "rooms"

urlpatterns = [
    path("", views.RoomListView.as_view(), name="list"),
    path("rooms/new/", views.RoomCreateView.as_view(), name="create"),
    path("rooms/<str:slug>/", views.RoomDetailView.as_view(), name="detail"),
    path("u/<str:username>/", views.ProfileView.as_view(), name="profile"),
    path("u/<str:username>/message/", views.DmOpenView.as_view(), name="dm-open"),
    path("dms/new/", views.DmOpenView.as_view(), name="dm-new"),
    path("settings/", views.SettingsView.as_view(), name="settings"),
    path("search/", views.SearchView.as_view(), name="search"),
]
