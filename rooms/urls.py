from django.urls import path

from . import views

app_name = "rooms"

urlpatterns = [
    path("", views.RoomListView.as_view(), name="list"),
    path("rooms/new/", views.RoomCreateView.as_view(), name="create"),
    path("rooms/<str:slug>/", views.RoomDetailView.as_view(), name="detail"),
]
