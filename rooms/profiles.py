"""Profiles: the name and e-mail address a user shows and is reached by (writes and reads).

- ``display_name``: the name shown beside a user's words (the author of a message, a member)
  instead of the username, up to ``DISPLAY_NAME_MAX_LENGTH`` characters; "" shows the username.
  Stored in Django's ``User.first_name`` (``last_name`` stays empty), so every query that loads
  a message's author already has it (no join, nothing on the send path) and Django admin edits
  it. Text rules as for room names: no control characters, not only invisible characters
  (``rooms.text``).
- ``email``: where a password reset is sent (Django's auth views); optional, "" for none. Two
  accounts may not share one (a reset mail must reach exactly one account), compared without
  regard to case.

A new name shows in every new message, history read and member list at once; a socket already
open keeps sending under the name it connected with until it reconnects (its user is loaded once,
at connect), as the room page does after a reload.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext_lazy as _

from .text import label_errors

DISPLAY_NAME_MAX_LENGTH = 64


def clean_display_name(value: str, *, user: AbstractBaseUser | None = None) -> str:
    """The display name as stored: surrounding spaces removed. Raises ``ValidationError`` (code
    ``invalid``) for control or text-direction characters or a name of invisible characters
    only, (``max_length``) beyond ``DISPLAY_NAME_MAX_LENGTH``, and (``impersonation``) for
    another user's username in any case (``user``: the one choosing it)."""
    value = (value or "").strip()
    if len(value) > DISPLAY_NAME_MAX_LENGTH:
        raise ValidationError(
            _("At most %(max)s characters."), code="max_length", params={"max": DISPLAY_NAME_MAX_LENGTH}
        )
    errors = label_errors(value, what="display name")
    if errors:
        raise ValidationError(errors[0], code="invalid")
    if (
        value
        and user is not None
        and get_user_model().objects.filter(username__iexact=value).exclude(pk=user.pk).exists()
    ):
        raise ValidationError(
            _("That is another user's username; choose a name that is yours."), code="impersonation"
        )
    return value


def clean_email(value: str, *, user: AbstractBaseUser | None = None) -> str:
    """The e-mail address as stored ("" for none). Raises ``ValidationError`` (``invalid``) for
    a malformed address and (``email_taken``) for one another account uses."""
    value = (value or "").strip()
    if not value:
        return ""
    validate_email(value)
    others = get_user_model().objects.filter(email__iexact=value)
    if user is not None:
        others = others.exclude(pk=user.pk)
    if others.exists():
        raise ValidationError(_("Another account uses this e-mail address."), code="email_taken")
    return value


def profile_update(*, user: AbstractBaseUser, display_name: str | None = None, email: str | None = None):
    """Change ``user``'s display name and/or e-mail address (each validated by ``clean_*``;
    ``ValidationError`` otherwise, and nothing changes). Returns the user."""
    fields = []
    if display_name is not None:
        user.first_name = clean_display_name(display_name, user=user)
        fields.append("first_name")
    if email is not None:
        user.email = clean_email(email, user=user)
        fields.append("email")
    if fields:
        user.save(update_fields=fields)
    return user


def display_name(user) -> str:
    """What to call ``user`` (a User or a user shape dict): their display name, else username."""
    if isinstance(user, dict):
        return user.get("display_name") or user.get("username", "")
    return user.first_name or user.get_username()
