from django import forms
from django.contrib.auth import forms as auth_forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from . import profiles, text
from .models import SLUG_MAX_LENGTH, SLUG_UNAVAILABLE, Room, normalize_slug, slug_from_name


class RoomCreateForm(forms.ModelForm):
    """The room list's create form. ``slug`` may be left empty: it is then made from the name
    by ``services.room_create`` (unguessable for a private room). Names and descriptions follow
    ``Room.clean``'s text rules; a taken or reserved slug answers ``SLUG_UNAVAILABLE``."""

    slug = forms.SlugField(
        required=False,
        max_length=SLUG_MAX_LENGTH,
        allow_unicode=True,
        label=_("Slug"),
        help_text=_(
            "Letters (any script), digits, - and _. Empty: made from the name (unguessable for a private room)."
        ),
    )

    class Meta:
        model = Room
        fields = ["name", "slug", "description", "is_private"]
        labels = {
            "name": _("Name"),
            "description": _("Description"),
            "is_private": _("Private room"),
        }
        help_texts = {"is_private": _("Private rooms are visible to their members only.")}

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("slug"):
            cleaned["slug"] = normalize_slug(cleaned["slug"])
        if not cleaned.get("slug") and cleaned.get("name") and not cleaned.get("is_private"):
            slug = slug_from_name(cleaned["name"])
            if not slug:
                self.add_error(
                    "slug", _("Choose a slug: one cannot be made from this name (it has no letter or digit).")
                )
            elif Room.objects.filter(slug__iexact=slug).exists():
                self.add_error("slug", SLUG_UNAVAILABLE)
        return cleaned

    def validate_unique(self):
        if self.cleaned_data.get("slug"):  # empty: the service makes one
            super().validate_unique()


class UsernameRule:
    """A form mixin: the ``username`` field also refuses invisible characters
    (``text.username_errors``), after the form's own checks (Django's validator; in a creation
    form, a username taken in any case)."""

    def clean_username(self):
        clean = getattr(super(), "clean_username", None)
        username = clean() if clean else self.cleaned_data.get("username")
        errors = text.username_errors(username)
        if errors:
            raise ValidationError(errors, code="invalid")
        return username


class SignupForm(UsernameRule, auth_forms.UserCreationForm):
    """Sign-up: a username and a password typed twice (Django's password validators apply)."""


class AdminUserCreationForm(UsernameRule, auth_forms.AdminUserCreationForm):
    """The admin's add-user form (``rooms.admin.UserAdmin``), under the site's username rule."""


class UserChangeForm(UsernameRule, auth_forms.UserChangeForm):
    """The admin's change-user form (``rooms.admin.UserAdmin``), under the site's username rule."""


class UserSettingsForm(forms.Form):
    """The settings page: the profile (``display_name``, ``email``: ``rooms.profiles``) and
    ``only_shared_rooms`` (``UserSettings.dms_from == "shared_rooms"``). Needs ``user`` (the
    e-mail address must not be another account's)."""

    display_name = forms.CharField(
        required=False,
        max_length=profiles.DISPLAY_NAME_MAX_LENGTH,
        label=_("Display name"),
        help_text=_("Shown beside your messages instead of your username (which stays your @mention)."),
    )
    email = forms.EmailField(
        required=False,
        max_length=254,
        label=_("E-mail address"),  # Django's User.email
        help_text=_("Only used to send you a link when you forget your password."),
    )
    only_shared_rooms = forms.BooleanField(
        required=False,
        label=_("Only people who share a room with me can start a direct message with me"),
        help_text=_("Direct messages you already have keep working."),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_display_name(self):
        return profiles.clean_display_name(self.cleaned_data["display_name"], user=self.user)

    def clean_email(self):
        return profiles.clean_email(self.cleaned_data["email"], user=self.user)
