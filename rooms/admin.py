from django.contrib import admin

from .models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_by", "created_at", "last_seq"]
    search_fields = ["name", "slug", "description"]
    readonly_fields = ["created_at", "last_seq"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Read-only view of history: sending, editing and deleting go through ``rooms.services``
    (which broadcast the change), never through a plain admin form save."""

    list_display = ["room", "seq", "author", "short_body", "server_id", "created_at"]
    list_filter = ["room", "server_id"]
    list_select_related = ["room", "author"]
    search_fields = ["body", "author__username"]
    date_hierarchy = "created_at"
    readonly_fields = ["room", "seq", "author", "body", "client_msg_id", "server_id", "created_at"]

    def has_add_permission(self, request):
        return False  # a message is sent by a member, through message_post, never typed in here

    @admin.display(description="body")
    def short_body(self, obj):
        return obj.body[:80]
