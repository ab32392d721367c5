"""Attachments: files and images in messages (writes and reads; Zulip's ``actions/uploads.py``).

**Upload** (``attachment_upload``; REST ``POST /api/rooms/<slug>/attachments/``, multipart, field
``file``): the uploader must be allowed to send in the room (the rules of ``message_post``:
member or public-room visitor, not banned, not muted, room not archived). Checked before anything
is stored:

- size: at most ``ATTACHMENT_MAX_BYTES`` (default 10 MB): else ``TooLarge`` (413 ``too_large``);
  nothing in it (no bytes, or only ASCII white space): ``EmptyFile`` (400 ``empty_file``);
- type, read from the *content* (``sniff``: the file's signature; text must be UTF-8 with no
  control characters and no HTML/SVG/XML markup), never from the name or the declared type:
  ``ALLOWED`` = PNG, JPEG, GIF, WebP, PDF, ZIP, plain text. Anything else, or a name ending in
  ``.html``, ``.svg``, ``.js`` and the like: ``UnsupportedType`` (415 ``unsupported_type``);
- the name's extension, any case, checked on the *cleaned* name (``clean_name``), the one
  stored, served and sent in ``Content-Disposition``: an image, PDF or ZIP must end in one of
  its type's (``CLAIMED``: ``.png``; ``.jpg``/``.jpeg``/``.jfif``/``.jpe``; ``.gif``;
  ``.webp``; ``.pdf``; ``.zip`` and the formats that are ZIP files, ``.docx``, ``.xlsx``,
  ``.pptx``, ``.odt``, ``.ods``, ``.odp``, ``.epub``), so ``evil`` U+202E ``gnp.exe`` (cleaned to ``evilgnp.exe``), ``noext`` and
  ``.png`` (cleaned to ``png``) holding a PNG are refused; text may have any name but another
  type's extension (``photo.png`` holding HTML) or a runnable one (``RUNNABLE_EXTENSIONS``:
  ``run.bat``, ``setup.exe``), so ``README``, ``data.json`` and ``script.py`` are kept. Each
  refusal is ``UnsupportedType`` (415): a file is never saved under a name its type does not
  match;
- images are decoded by Pillow (at most ``MAX_PIXELS``; a corrupt or oversized one is 415), turned
  upright by their EXIF orientation and saved again *without* EXIF or text chunks (no location
  ever leaves the server, the original included), and get a thumbnail (at most
  ``THUMBNAIL_SIZE`` pixels a side; JPEG, or PNG with transparency).

Stored through Django's default storage (``settings.STORAGES``: ``MEDIA_ROOT`` or S3) under a
random name ``attachments/<room id>/<32 hex>.<ext>``; the uploader's file name is kept only as
text (``clean_name``). Nothing is stored when a check fails.

**Sending** (``attachments_claim``, called by ``rooms.services`` in the message's transaction):
a ``message.send`` frame or REST post carries ``"attachments": [id, ...]`` (at most
``MAX_PER_MESSAGE``); each must be the sender's own upload in that room, not yet in a message,
and given once, else ``InvalidAttachment`` (400 / error frame ``invalid_attachment``, with
``ids``: the ids at fault) and the message is not stored (the uploads stay unsent, to be sent
again).

**Shape** (the message's ``attachments``, ``attachment_data``)::

    {"id": int, "name": str, "size": int (bytes), "content_type": str,
     "url": "/api/attachments/<id>/<name>", "thumbnail_url": str | null,
     "width": int | null, "height": int | null}

**Download** (``attachment_readable``; ``GET /api/attachments/<id>/<name>`` and
``.../thumbnail/``): checked at every read, never a public path: the room must be readable by the
caller now (a member not banned, or a public room's visitor not banned), the message not
deleted; an upload not yet sent only by its uploader. Anything else answers 404, as for an id
that does not exist. Images (and thumbnails) are served inline with their image type; every
other file with ``Content-Disposition: attachment``; always ``X-Content-Type-Options: nosniff``
and ``Content-Security-Policy: default-src 'none'; sandbox``, so nothing uploaded runs as a page.
"""

import io
import re
import secrets
import unicodedata
from pathlib import PurePosixPath

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from .models import Attachment, Membership, Message, Room
from .services import NotFound, ServiceError, check_may_upload
from .sqlutil import with_ids

MAX_PER_MESSAGE = 10
MAX_PIXELS = 40_000_000  # decoded image size limit (Pillow's bomb check uses its own, larger one)
THUMBNAIL_SIZE = (400, 400)
NAME_MAX = 200

IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
ALLOWED = {**IMAGE_TYPES, "application/pdf": None, "application/zip": None, "text/plain": None}
EXTENSION_OF = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "text/plain": ".txt",
}
# What a file name's extension claims; a claim that the content contradicts is refused.
CLAIMED = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".pdf": "application/pdf",
    ".zip": "application/zip",
    # Formats that are ZIP files: office documents, OpenDocument, EPUB.
    ".docx": "application/zip",
    ".xlsx": "application/zip",
    ".pptx": "application/zip",
    ".odt": "application/zip",
    ".ods": "application/zip",
    ".odp": "application/zip",
    ".epub": "application/zip",
    ".jfif": "image/jpeg",  # what Windows browsers save many web images as
    ".jpe": "image/jpeg",
    ".txt": "text/plain",
    ".md": "text/plain",
    ".csv": "text/plain",
    ".log": "text/plain",
}
# Names a text file may not have: the desktop runs them when opened (a downloaded run.bat).
RUNNABLE_EXTENSIONS = {
    ".exe",
    ".com",
    ".bat",
    ".cmd",
    ".scr",
    ".pif",
    ".cpl",
    ".msi",
    ".msc",
    ".dll",
    ".lnk",
    ".reg",
    ".vbs",
    ".vbe",
    ".jse",
    ".wsf",
    ".wsh",
    ".ps1",
    ".psm1",
    ".jar",
    ".app",
    ".command",
    ".desktop",
    ".url",
    ".scf",
    ".rdp",
    ".iqy",
    ".inf",
    ".sct",
    ".wsc",
    ".mht",
    ".mhtml",
    ".appref-ms",
    ".pyw",
    ".settingcontent-ms",
    ".library-ms",
}
# Names never taken, whatever the content: a browser (or a careless client) could render them.
REFUSED_EXTENSIONS = {
    ".html",
    ".htm",
    ".xhtml",
    ".xht",
    ".shtml",
    ".svg",
    ".svgz",
    ".xml",
    ".xsl",
    ".js",
    ".mjs",
    ".hta",
    ".swf",
    ".php",
    ".jsp",
    ".asp",
    ".aspx",
}
_MARKUP = re.compile(
    rb"<\s*(?:!doctype|html|head|body|script|svg|iframe|object|embed|meta|link|style|\?xml|a\s)",
    re.IGNORECASE,
)
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")


class TooLarge(ServiceError):
    code, status = "too_large", 413


class UnsupportedType(ServiceError):
    code, status = "unsupported_type", 415


class InvalidAttachment(ServiceError):
    code, status = "invalid_attachment", 400


class EmptyFile(ServiceError):
    code, status = "empty_file", 400


def max_bytes() -> int:
    return int(getattr(settings, "ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024))


def clean_name(name: str | None) -> str:
    """The uploader's file name as text: its last path part, NFC, without control or format
    characters or white space and dots at either end, at most ``NAME_MAX`` characters (the
    extension kept); ``"file"`` when nothing is left. Shown escaped in pages and sent in ``Content-Disposition`` encoded by Django."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    # No white space or dot at either end, however mixed: Windows drops trailing ones as it
    # saves ("run.bat . " is run.bat), so the extension checked must be the last one left.
    name = re.sub(r"^[\s.]+|[\s.]+$", "", name)
    if len(name) > NAME_MAX:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext) <= 20:
            name = stem[: NAME_MAX - len(ext) - 1] + "." + ext
        else:
            name = name[:NAME_MAX]
    return name or "file"


def sniff(data: bytes) -> str | None:
    """The allowed type the content is, by its signature (text: UTF-8, no control characters, no
    markup), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "application/zip"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not data.strip() or _CONTROL.search(data) or _MARKUP.search(data):
        return None
    return "text/plain"


def _storage_name(room: Room, ext: str, suffix: str = "") -> str:
    return f"attachments/{room.pk}/{secrets.token_hex(16)}{suffix}{ext}"


def _clean_image(data: bytes, kind: str) -> tuple[bytes, bytes, str, int, int]:
    """``(stored bytes without EXIF, thumbnail bytes, thumbnail extension, width, height)``;
    ``UnsupportedType`` for an image Pillow cannot read or one over ``MAX_PIXELS``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    fmt = IMAGE_TYPES[kind]
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format != fmt:
                raise UnsupportedType(_("The image is not what its signature says."))
            if probe.width * probe.height > MAX_PIXELS:
                raise UnsupportedType(
                    _("Images are at most %(count)s megapixels."), params={"count": MAX_PIXELS // 1_000_000}
                )
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
        animated = getattr(image, "is_animated", False)
        if not animated:
            image = ImageOps.exif_transpose(image)  # upright, without the orientation tag
        out = io.BytesIO()
        if fmt == "JPEG":
            image.save(out, "JPEG", quality=92, icc_profile=image.info.get("icc_profile"))
        elif fmt == "PNG":
            image.save(out, "PNG", icc_profile=image.info.get("icc_profile"))  # no text or eXIf chunks
        elif fmt == "WEBP":
            image.save(out, "WEBP", quality=90, save_all=animated)
        else:
            image.save(out, "GIF", save_all=animated)
        width, height = image.size
        thumb = image.copy()
        thumb.seek(0) if animated else None
        thumb.thumbnail(THUMBNAIL_SIZE)
        has_alpha = thumb.mode in ("RGBA", "LA") or (thumb.mode == "P" and "transparency" in thumb.info)
        thumb_out = io.BytesIO()
        if has_alpha:
            thumb.convert("RGBA").save(thumb_out, "PNG")
            thumb_ext = ".png"
        else:
            thumb.convert("RGB").save(thumb_out, "JPEG", quality=85)
            thumb_ext = ".jpg"
    except UnsupportedType:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnsupportedType(
            _("The image could not be read (%(error)s)."), params={"error": type(exc).__name__}
        ) from None
    return out.getvalue(), thumb_out.getvalue(), thumb_ext, width, height


def attachment_upload(*, room: Room, user: AbstractBaseUser, upload: UploadedFile) -> Attachment:
    """Check and store one upload into ``room`` (see the module docstring); the new, unsent
    ``Attachment``. Raises ``TooLarge``, ``EmptyFile``, ``UnsupportedType``, and the send rules'
    refusals (``NotFound``, ``Banned``, ``Muted``, ``Archived``)."""
    check_may_upload(room=room, user=user)
    limit = max_bytes()
    if upload.size is None or upload.size > limit:
        raise TooLarge(
            _("A file is at most %(mb)s MB."), params={"mb": limit // (1024 * 1024)}, max_bytes=limit
        )
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(
            _("A file is at most %(mb)s MB."), params={"mb": limit // (1024 * 1024)}, max_bytes=limit
        )
    name = clean_name(upload.name)
    ext = PurePosixPath(name.lower()).suffix  # of the name as stored and served, not as sent
    if ext in REFUSED_EXTENSIONS:
        raise UnsupportedType(_("Files of this kind cannot be shared (HTML, SVG, scripts)."))
    if not data.strip():
        raise EmptyFile(_("The file is empty."))
    kind = sniff(data)
    if kind is None:
        raise UnsupportedType(_("Only images (PNG, JPEG, GIF, WebP), PDF, ZIP and plain text can be shared."))
    if ext in CLAIMED and CLAIMED[ext] != kind:
        raise UnsupportedType(
            _("The file's content is not what its name says (%(ext)s)."), params={"ext": ext}
        )
    if ext in RUNNABLE_EXTENSIONS:  # text may have any other name (README, data.json, script.py)
        raise UnsupportedType(
            _("Files that run when opened (%(ext)s) cannot be shared."), params={"ext": ext}
        )
    if kind != "text/plain" and ext not in CLAIMED:  # no "photo.exe" shown inline as a PNG
        raise UnsupportedType(
            _(
                "The file's name must end in an extension that matches its content (%(type)s: %(extensions)s)."
            ),
            params={"type": kind, "extensions": ", ".join(e for e, k in CLAIMED.items() if k == kind)},
        )
    width = height = None
    thumbnail_bytes = thumb_ext = None
    if kind in IMAGE_TYPES:
        data, thumbnail_bytes, thumb_ext, width, height = _clean_image(data, kind)
    stored = default_storage.save(_storage_name(room, EXTENSION_OF[kind]), ContentFile(data))
    thumbnail = ""
    try:
        if thumbnail_bytes is not None:
            thumbnail = default_storage.save(
                _storage_name(room, thumb_ext, "-thumb"), ContentFile(thumbnail_bytes)
            )
        return Attachment.objects.create(
            room=room,
            uploader=user,
            file=stored,
            thumbnail=thumbnail,
            name=name,
            size=len(data),
            content_type=kind,
            width=width,
            height=height,
        )
    except BaseException:
        for path in (stored, thumbnail):
            if path:
                default_storage.delete(path)
        raise


def attachments_claim(*, message: Message, user: AbstractBaseUser, ids: list[int]) -> list[Attachment]:
    """Inside the sending transaction: give ``message`` the attachments ``ids`` (shown by id, as
    history loads them), each ``user``'s own unsent upload in the message's room, each id once;
    else ``InvalidAttachment`` with ``ids``: the ids at fault (the caller's transaction rolls
    back: no message, and the uploads stay unsent)."""
    if not ids:
        return []
    repeated = [i for i in dict.fromkeys(ids) if ids.count(i) > 1]
    if repeated:
        raise InvalidAttachment(_("Each attachment is given once in a message."), ids=repeated)
    if len(ids) > MAX_PER_MESSAGE:
        raise InvalidAttachment(
            _("A message carries at most %(count)s attachments."), params={"count": MAX_PER_MESSAGE}
        )
    found = {
        a.pk: a
        for a in Attachment.objects.select_for_update().filter(
            pk__in=ids, uploader_id=user.pk, room_id=message.room_id, message__isnull=True
        )
    }
    if len(found) != len(ids):
        raise InvalidAttachment(
            _("An attachment is not one of your unsent uploads in this room."),
            ids=[i for i in ids if i not in found],
        )
    Attachment.objects.filter(pk__in=ids).update(message=message)
    claimed = [found[i] for i in sorted(ids)]
    for attachment in claimed:
        attachment.message = message
    message.attachment_list = claimed
    return claimed


def by_message(ids: list[int]) -> dict[int, list[Attachment]]:
    """``{message id: [Attachment, ...]}`` (by id) for the messages ``ids`` that carry files,
    in one query (none for an empty ``ids``); a message without attachments is absent. The
    caller leaves out deleted messages; ``attachment_data`` gives each one's shape."""
    found: dict[int, list[Attachment]] = {}
    if ids:
        for attachment in with_ids(Attachment.objects.all(), "message", ids).order_by("id"):
            found.setdefault(attachment.message_id, []).append(attachment)
    return found


def attach(messages: list[Message]) -> list[Message]:
    """Load the attachments of ``messages`` for their wire shape (``message.attachment_list``),
    in one query (none for deleted messages)."""
    found = by_message([m.pk for m in messages if m.deleted_at is None])
    for message in messages:
        message.attachment_list = found.get(message.pk, [])
    return messages


def attachments_of(message: Message) -> list[dict]:
    """The message's ``attachments`` shape: ``attach``'s or ``attachments_claim``'s when loaded,
    else one query; none for a deleted message."""
    if message.deleted_at is not None:
        return []
    loaded = getattr(message, "attachment_list", None)
    if loaded is None:
        attach([message])
        loaded = message.attachment_list
    return [attachment_data(a) for a in loaded]


def attachment_data(attachment: Attachment) -> dict:
    """The attachment's shape in a message (see the module's docstring)."""
    return attachment_shape(
        attachment.pk,
        attachment.name,
        attachment.size,
        attachment.content_type,
        attachment.thumbnail,
        attachment.width,
        attachment.height,
    )


def attachment_shape(
    pk: int, name: str, size: int, content_type: str, thumbnail: str, width: int | None, height: int | None
) -> dict:
    """``attachment_data`` from the row's columns (``thumbnail``: the storage name, "" for none;
    ``size`` in bytes, ``width`` / ``height`` in pixels or None), for readers of rows
    (``rooms.message_shape.room_list_data``)."""
    return {
        "id": pk,
        "name": name,
        "size": size,
        "content_type": content_type,
        "url": reverse("api:attachment", args=[pk, name]),
        "thumbnail_url": reverse("api:attachment-thumbnail", args=[pk]) if thumbnail else None,
        "width": width,
        "height": height,
    }


def attachment_readable(*, user: AbstractBaseUser, attachment_id: int) -> Attachment:
    """The attachment if ``user`` may download it now (see the module docstring), else
    ``NotFound``."""
    attachment = (
        Attachment.objects.select_related("room", "message").filter(pk=attachment_id).first()
        if 0 < attachment_id < 2**63
        else None
    )
    if attachment is None or not user.is_authenticated:
        raise NotFound(_("No such attachment."))
    if attachment.message is None:
        if attachment.uploader_id != user.pk:
            raise NotFound(_("No such attachment."))
    elif attachment.message.deleted_at is not None:
        raise NotFound(_("No such attachment."))
    membership = Membership.objects.filter(room_id=attachment.room_id, user_id=user.pk).first()
    if membership is not None and membership.is_banned:
        raise NotFound(_("No such attachment."))
    if attachment.room.is_private and membership is None:
        raise NotFound(_("No such attachment."))
    return attachment
