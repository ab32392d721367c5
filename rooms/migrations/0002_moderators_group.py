"""The ``Moderators`` group: exactly the permissions Django admin's moderation needs (see
rooms.admin): read rooms, read and soft-delete or edit messages, read members and mute or ban
them. No add or delete permission: messages are never typed in or hard-deleted in admin."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

MODERATOR_PERMISSIONS = [
    ("rooms", "view_room"),
    ("rooms", "view_message"),
    ("rooms", "change_message"),
    ("rooms", "view_membership"),
    ("rooms", "change_membership"),
]


def create_group(apps, schema_editor):
    # Permissions are normally made after all migrations ran; make them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Moderators")
    group.permissions.set(
        [
            Permission.objects.get(content_type__app_label=app, codename=code)
            for app, code in MODERATOR_PERMISSIONS
        ]
    )


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Moderators").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rooms", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
