from django.urls import path

from . import api

app_name = "api"

urlpatterns = [
    path("rooms/<str:slug>/messages/", api.RoomMessagesView.as_view(), name="room-messages"),
]
