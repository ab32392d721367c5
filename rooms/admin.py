"""Django admin for moderators (the ``Moderators`` group, made by migration 0002).

Every change goes through ``rooms.services``, so it has the same live effect as the API: a
deleted message disappears from every open page on every node; a ban closes the member's
sockets everywhere. Messages are never hard-deleted here: "delete" is a soft delete, and never
rewritten: a body is read-only here (only its author edits it, in the app), and a direct
message's body is not shown at all. The services apply the moderation hierarchy here too:
nobody acts on a room's owner; staff who are not site moderators act as their role in the room
allows (a room moderator not on a fellow moderator); each refusal is shown and changes nothing.

So do the changes here that end someone's access to a room, on every node at once: a room made
private or deleted (``services.room_save``, ``room_delete``), a membership deleted
(``member_remove``), a user deactivated or deleted (``user_save``, ``user_delete``: the auth
app's user admin is replaced by ``UserAdmin`` below), an API token deleted (``token_revoke``).
"""

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from rest_framework.authtoken import admin as token_admin
from rest_framework.authtoken.models import TokenProxy

from . import services
from .forms import AdminUserCreationForm, UserChangeForm
from .models import Membership, Message, Room


def _apply(modeladmin, request, items, verb: str, action) -> None:
    """Run ``action(item)`` (a service call) on each item and tell the moderator how many
    succeeded and why any was refused (``ServiceError``)."""
    done = 0
    for item in items:
        try:
            action(item)
            done += 1
        except services.ServiceError as exc:
            modeladmin.message_user(request, f"{item}: {exc.localized_detail()}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{done} {verb}.", messages.SUCCESS)


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "kind",
        "is_private",
        "archived_at",
        "created_by",
        "created_at",
        "last_seq",
    ]
    list_filter = ["kind", "is_private", ("archived_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["name", "slug", "description"]
    date_hierarchy = "created_at"
    readonly_fields = ["id", "created_at", "last_seq", "archived_at", "kind"]
    prepopulated_fields = {"slug": ["name"]}
    actions = ["archive_rooms"]

    def get_readonly_fields(self, request, obj=None):
        """A direct message (``rooms.dms``) is not edited here: it stays private, its name and
        slug are its own (delete it instead)."""
        if obj is not None and obj.is_dm:
            return [*self.readonly_fields, "name", "slug", "description", "is_private", "created_by"]
        return self.readonly_fields

    def get_prepopulated_fields(self, request, obj=None):
        return {} if obj is not None and obj.is_dm else self.prepopulated_fields

    def has_archive_permission(self, request) -> bool:
        """Site moderators (the ``Moderators`` group, which may only view rooms here, not edit
        them) and superusers may archive: the same rule ``services.room_archive`` applies."""
        return services.is_site_moderator(request.user)

    @admin.action(
        description="Archive selected rooms (close their sockets, keep history)", permissions=["archive"]
    )
    def archive_rooms(self, request, queryset):
        _apply(
            self,
            request,
            queryset,
            "room(s) archived",
            lambda room: services.room_archive(room=room, actor=request.user),
        )

    def save_model(self, request, obj, form, change):
        """``services.room_save``: made private, the room's sockets of non-members close (4404)."""
        services.room_save(room=obj)

    def delete_model(self, request, obj):
        """``services.room_delete``: every socket in the room closes with 4404 on every node."""
        try:
            services.room_delete(room=obj, actor=request.user)
        except services.ServiceError as exc:  # a 403 page, not "deleted successfully" beside it
            raise PermissionDenied(exc.localized_detail()) from None

    def delete_queryset(self, request, queryset):
        _apply(
            self,
            request,
            queryset,
            "room(s) deleted",
            lambda room: services.room_delete(room=room, actor=request.user),
        )


DM_BODY_HIDDEN = "(a direct message: not shown)"


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """History with moderation: soft-delete (broadcast as ``message.deleted``), never rewrite.

    A body is shown read-only and is edited by its author only, in the app (``services.
    check_may_edit``): this admin has no change form for a message (a POST to one answers 403
    and changes nothing), only the soft-delete action, which the services apply under the
    moderation hierarchy. A direct message's body is not shown here to anyone, nor found by
    the search: site moderators see that it exists (room, seq, author, times) and may delete
    it, which is all the moderation rules let them do in a DM (``rooms.dms``)."""

    list_display = [
        "room",
        "seq",
        "author",
        "short_body",
        "server_id",
        "created_at",
        "edited_at",
        "deleted_at",
    ]
    list_filter = ["room", "author", "created_at", ("deleted_at", admin.EmptyFieldListFilter), "server_id"]
    list_select_related = ["room", "author"]
    # The body is searched too, in group rooms only (get_search_results): not a DM's.
    search_fields = ["author__username", "room__slug", "room__name"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "id",
        "room",
        "seq",
        "author",
        "shown_body",
        "client_msg_id",
        "server_id",
        "created_at",
        "edited_at",
        "deleted_at",
        "deleted_by",
    ]
    fields = readonly_fields
    actions = ["soft_delete"]

    def has_add_permission(self, request):
        return False  # a message is sent by a member, through message_post, never typed in here

    def has_change_permission(self, request, obj=None):
        """The change permission (the ``Moderators`` group's) opens the list and its soft-delete
        action; no message is ever changed through its form: the page is read-only, a POST 403."""
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a hard delete would leave a gap in seq
        return actions

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if search_term:  # bodies of group rooms' messages, never of a direct message
            results = results | queryset.filter(room__kind=Room.Kind.ROOM, body__icontains=search_term)
        return results, may_have_duplicates

    @staticmethod
    def _body(obj, limit: int | None = None) -> str:
        if obj.deleted_at:
            return "(deleted)"
        if obj.room.is_dm:
            return DM_BODY_HIDDEN
        return obj.body[:limit] if limit else obj.body

    @admin.display(description="body")
    def short_body(self, obj):
        return self._body(obj, 80)

    @admin.display(description="body")
    def shown_body(self, obj):
        return self._body(obj)

    def delete_model(self, request, obj):
        _apply(
            self,
            request,
            [obj],
            "message(s) deleted",
            lambda message: services.message_delete(message=message, actor=request.user),
        )

    def delete_queryset(self, request, queryset):
        _apply(
            self,
            request,
            queryset.select_related("room"),
            "message(s) deleted",
            lambda message: services.message_delete(message=message, actor=request.user),
        )

    @admin.action(
        description="Soft-delete selected messages (removed from every open page)", permissions=["change"]
    )
    def soft_delete(self, request, queryset):
        _apply(
            self,
            request,
            queryset.select_related("room"),
            "message(s) deleted",
            lambda message: services.message_delete(message=message, actor=request.user),
        )


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "room", "role", "joined_at", "muted_until", "banned_at"]
    list_filter = ["room", "role", ("banned_at", admin.EmptyFieldListFilter), "joined_at"]
    list_select_related = ["room", "user"]
    search_fields = ["user__username", "room__name", "room__slug"]
    date_hierarchy = "joined_at"
    readonly_fields = ["id", "room", "user", "role", "joined_at", "muted_until", "banned_at"]
    actions = ["mute_1h", "mute_24h", "unmute", "ban", "unban"]

    def has_add_permission(self, request):
        return False  # members join or are added through the site or the API

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request, obj, form, change):
        """Every field is read-only here (mutes and bans are the actions above, each a service
        call): nothing is ever saved raw."""

    def delete_model(self, request, obj):
        """``services.member_remove``: the member's sockets in the room close on every node (4404
        in a private room, 4000 in a public one)."""
        try:
            services.member_remove(room=obj.room, actor=request.user, user=obj.user)
        except services.ServiceError as exc:  # the owner's: a 403 page, not "deleted successfully"
            raise PermissionDenied(exc.localized_detail()) from None

    def delete_queryset(self, request, queryset):
        self._each(request, queryset, "membership(s) deleted", services.member_remove)

    def _each(self, request, queryset, verb, fn, **kwargs):
        _apply(
            self,
            request,
            queryset.select_related("room", "user"),
            verb,
            lambda m: fn(room=m.room, actor=request.user, user=m.user, **kwargs),
        )

    @admin.action(description="Mute selected members for 1 hour", permissions=["change"])
    def mute_1h(self, request, queryset):
        self._each(
            request,
            queryset,
            "member(s) muted",
            services.member_mute,
            until=timezone.now() + timedelta(hours=1),
        )

    @admin.action(description="Mute selected members for 24 hours", permissions=["change"])
    def mute_24h(self, request, queryset):
        self._each(
            request,
            queryset,
            "member(s) muted",
            services.member_mute,
            until=timezone.now() + timedelta(hours=24),
        )

    @admin.action(description="Unmute selected members", permissions=["change"])
    def unmute(self, request, queryset):
        self._each(request, queryset, "member(s) unmuted", services.member_mute, until=None)

    @admin.action(
        description="Ban selected members (closes their sockets on every node)", permissions=["change"]
    )
    def ban(self, request, queryset):
        self._each(request, queryset, "member(s) banned", services.member_ban)

    @admin.action(description="Lift the ban of selected members", permissions=["change"])
    def unban(self, request, queryset):
        self._each(request, queryset, "ban(s) lifted", services.member_unban)


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class UserAdmin(auth_admin.UserAdmin):
    """Django's user admin, saving and deleting through ``rooms.services``: a user deactivated
    here (or deleted) has every socket closed with 4401 on every node at once. Its forms refuse
    a username with an invisible character, as sign-up does (``rooms.forms.UsernameRule``)."""

    form = UserChangeForm
    add_form = AdminUserCreationForm

    def save_model(self, request, obj, form, change):
        services.user_save(user=obj)

    def user_change_password(self, request, id, form_url=""):
        """Django's set-password page (a new password, or password log-in turned off): once it
        is saved, every session of the user is signed out and their sockets close with 4401 on
        every node (``services.user_sessions_changed``); an admin setting their own password
        stays signed in on this session (Django renews it: its sockets close with 4001 and
        reconnect)."""
        renewed = request.session.session_key
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:  # saved (a form error: 200)
            user = self.get_object(request, unquote(id))
            if user is not None:
                services.user_sessions_changed(
                    user=user, renewed_session_key=renewed if user.pk == request.user.pk else None
                )
        return response

    def delete_model(self, request, obj):
        services.user_delete(user=obj)

    def delete_queryset(self, request, queryset):
        for user in queryset:
            services.user_delete(user=user)


if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class TokenAdmin(token_admin.TokenAdmin):
    """DRF's token admin, deleting through ``services.token_revoke``: sockets opened with the
    token close with 4401 on every node."""

    def delete_model(self, request, obj):
        services.token_revoke(user=obj.user)

    def delete_queryset(self, request, queryset):
        for token in queryset.select_related("user"):
            services.token_revoke(user=token.user)
