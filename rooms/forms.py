from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.utils.text import slugify

from .models import Room


class RoomCreateForm(forms.ModelForm):
    """The room list's create form. ``slug`` may be left empty: it is then made from the name."""

    slug = forms.SlugField(
        required=False, max_length=64, help_text="Letters, digits, - and _. Empty: made from the name."
    )

    class Meta:
        model = Room
        fields = ["name", "slug", "description", "is_private"]
        labels = {"is_private": "Private room"}

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("slug") and cleaned.get("name"):
            slug = slugify(cleaned["name"])[:64]
            if not slug:
                self.add_error("slug", "Choose a slug: one cannot be made from this name (slugs use ASCII letters, digits, - and _).")
            elif Room.objects.filter(slug=slug).exists():
                self.add_error("slug", f"A room with the slug {slug!r} exists; choose another.")
            cleaned["slug"] = slug
        return cleaned


class SignupForm(UserCreationForm):
    """Sign-up: a username and a password typed twice (Django's password validators apply)."""
