"""Attachments (``rooms.attachments``): upload checks on the content (413, 415), EXIF stripped from
the stored image and its thumbnail, who may download (member, non-member 404, unsent uploads,
deleted messages), the download's headers, and file names kept as text."""

import io
import logging

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from rooms import attachments, services
from rooms.models import Attachment
from tests import factories


@pytest.fixture(autouse=True)
def media(media_in_tmp, settings, tmp_path):
    """Uploads into this test's own folder (conftest's ``media_in_tmp``)."""
    settings.ATTACHMENT_MAX_BYTES = 200_000
    return tmp_path


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def jpeg_with_gps(width=640, height=480) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (width, height), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0112] = 6  # Orientation: rotated 90° (stored sideways)
    gps = {1: "N", 2: (37.0, 33.0, 59.0), 3: "E", 4: (126.0, 58.0, 40.0)}
    exif[0x8825] = gps
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def upload(client, slug, name, data, content_type="application/octet-stream"):
    return client.post(
        f"/api/rooms/{slug}/attachments/",
        {"file": SimpleUploadedFile(name, data, content_type=content_type)},
        format="multipart",
    )


@pytest.mark.django_db
def test_an_image_is_stored_without_exif_upright_with_a_thumbnail_and_downloads_for_a_member(
    api, room, other_user
):
    from PIL import Image

    data = jpeg_with_gps()
    assert b"SpyCam" in data
    response = upload(api, "lobby", "beach.jpg", data, "image/jpeg")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "beach.jpg" and body["content_type"] == "image/jpeg"
    assert (body["width"], body["height"]) == (480, 640)  # turned upright by its orientation
    assert body["url"] == f"/api/attachments/{body['id']}/beach.jpg"
    assert body["thumbnail_url"] == f"/api/attachments/{body['id']}/thumbnail/"
    stored = Attachment.objects.get(pk=body["id"])
    with default_storage.open(stored.file) as f:
        kept = f.read()
    assert b"SpyCam" not in kept and b"Exif" not in kept[:200]
    assert not Image.open(io.BytesIO(kept)).getexif()
    assert stored.file.startswith(f"attachments/{room.pk}/") and "beach" not in stored.file

    services.member_join(room=room, user=other_user)
    bob = client_for(other_user)
    # Unsent: only its uploader sees it.
    assert bob.get(body["url"]).status_code == 404
    message = services.message_post(
        room=room, author=room.created_by, body="look", client_msg_id="m1"
    ).message
    attachments.attachments_claim(message=message, user=room.created_by, ids=[body["id"]])
    download = bob.get(body["url"])
    assert download.status_code == 200
    assert download["Content-Type"] == "image/jpeg" and download["X-Content-Type-Options"] == "nosniff"
    assert download["Content-Disposition"].startswith("inline")
    assert "sandbox" in download["Content-Security-Policy"]
    assert b"".join(download.streaming_content) == kept
    thumb = bob.get(body["thumbnail_url"])
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(b"".join(thumb.streaming_content)))
    assert max(image.size) <= 400 and not image.getexif()


@pytest.mark.django_db
def test_a_private_rooms_attachment_is_404_for_a_non_member_and_after_its_message_is_deleted(
    user, other_user
):
    attic = factories.make_room(created_by=user, slug="attic", is_private=True)
    owner = client_for(user)
    body = upload(owner, "attic", "notes.txt", b"plain notes\n", "text/plain").json()
    message = services.message_post(room=attic, author=user, body="notes", client_msg_id="n1").message
    attachments.attachments_claim(message=message, user=user, ids=[body["id"]])
    assert owner.get(body["url"]).status_code == 200
    stranger = client_for(other_user)
    for url in (body["url"], f"/api/attachments/{body['id']}/other-name.txt"):
        response = stranger.get(url)
        assert response.status_code == 404 and response.json() == {
            "detail": "Not found.",
            "code": "not_found",
        }
    assert stranger.get("/api/attachments/999999/x.txt").json() == {
        "detail": "Not found.",
        "code": "not_found",
    }
    services.message_delete(message=message, actor=user)
    assert owner.get(body["url"]).status_code == 404
    assert APIClient().get(body["url"]).status_code == 401


@pytest.mark.django_db
def test_other_files_download_as_attachments_with_nosniff(api, room, user):
    body = upload(api, "lobby", "report.pdf", b"%PDF-1.4\n% fake but signed\n", "application/pdf").json()
    assert (
        body["content_type"] == "application/pdf" and body["thumbnail_url"] is None and body["width"] is None
    )
    download = api.get(body["url"])
    assert download.status_code == 200 and download["Content-Type"] == "application/pdf"
    assert download["Content-Disposition"] == 'attachment; filename="report.pdf"'
    assert download["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_an_upload_over_the_limit_answers_413_json_and_stores_nothing(api, room, media):
    response = upload(api, "lobby", "big.txt", b"a" * 200_001, "text/plain")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large" and "detail" in response.json()
    assert not Attachment.objects.exists() and not any(media.rglob("*.*"))
    assert upload(api, "lobby", "fits.txt", b"a" * 200_000, "text/plain").status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("cat.png", b"<html><body><script>alert(1)</script></body></html>"),
        ("cat.png", b"\xff\xd8\xff\xe0 a jpeg signature under a png name"),
        ("notes.txt", b"<!DOCTYPE html><p>hi"),
        ("drawing.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"),
        ("page.html", b"just words"),
        ("program.exe", b"MZ\x90\x00\x03\x00\x00\x00"),
        ("broken.png", b"\x89PNG\r\n\x1a\n not really a png"),
    ],
)
def test_content_that_is_not_an_allowed_type_or_not_what_its_name_says_answers_415(
    api, room, media, name, data
):
    response = upload(api, "lobby", name, data, "image/png")
    assert response.status_code == 415, response.content
    assert response.json()["code"] == "unsupported_type"
    assert not Attachment.objects.exists() and not any(media.rglob("*.*"))


@pytest.mark.django_db
def test_uploads_follow_the_rules_of_sending(user, other_user, room):
    factories.make_room(created_by=user, slug="attic", is_private=True)
    bob = client_for(other_user)
    assert upload(bob, "attic", "a.txt", b"hello").status_code == 404
    services.member_join(room=room, user=other_user)
    services.member_ban(room=room, actor=user, user=other_user)
    assert upload(bob, "lobby", "a.txt", b"hello").json()["code"] == "banned"
    assert upload(client_for(user), "lobby", "a.txt", b"").json()["code"] == "empty_file"
    assert client_for(user).post("/api/rooms/lobby/attachments/", {}, format="multipart").status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data", b"--x\r\n"),  # no boundary given
        ("multipart/form-data; boundary=\u00e9", b"--\xc3\xa9\r\n"),  # a boundary that is not ASCII
    ],
)
def test_a_multipart_body_that_cannot_be_parsed_is_400_invalid_multipart(
    api, room, content_type, body, caplog
):
    """A malformed multipart upload answers 400 ``{"detail", "code": "invalid_multipart"}``
    (rooms.rest.MultiPartParser), logs no error and stores nothing."""
    with caplog.at_level(logging.WARNING):
        response = api.generic("POST", "/api/rooms/lobby/attachments/", body, content_type=content_type)
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["code"] == "invalid_multipart" and response.json()["detail"], response.json()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_file_names_are_kept_as_text_without_paths_or_control_characters(api, room):
    body = upload(api, "lobby", '../../<img src=x onerror=alert(1)>\u202e"evil".txt', b"text").json()
    assert body["name"] == '<img src=x onerror=alert(1)>"evil".txt'
    download = api.get(body["url"])
    assert download.status_code == 200 and download["Content-Type"] == "text/plain; charset=utf-8"
    assert download["Content-Disposition"].startswith("attachment; filename")
    assert (
        attachments.clean_name("a" * 300 + ".pdf").endswith(".pdf")
        and len(attachments.clean_name("a" * 300)) == 200
    )
    assert attachments.clean_name("") == "file" and attachments.clean_name("C:\\Users\\x\\y.txt") == "y.txt"


def test_sniffing_reads_the_content_not_the_name():
    assert attachments.sniff(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert attachments.sniff(b"GIF89a...") == "image/gif"
    assert attachments.sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert attachments.sniff(b"PK\x03\x04zip") == "application/zip"
    assert attachments.sniff("한국어 메모\n".encode()) == "text/plain"
    assert attachments.sniff(b"hi <script>x</script>") is None
    assert attachments.sniff(b"\x00\x01binary") is None
    assert attachments.sniff(b"\xc3\x28 invalid utf-8") is None


# --- sending ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_rest_message_carries_its_uploads_in_the_message_shape_and_history(api, room, user):
    photo = upload(api, "lobby", "beach.jpg", jpeg_with_gps(), "image/jpeg").json()
    notes = upload(api, "lobby", "notes.txt", b"notes\n", "text/plain").json()
    response = api.post(
        "/api/rooms/lobby/messages/",
        {"body": "two files", "client_msg_id": "a-1", "attachments": [notes["id"], photo["id"]]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert [a["id"] for a in response.json()["attachments"]] == [photo["id"], notes["id"]]  # by id
    assert response.json()["attachments"][0] == photo
    history = api.get("/api/rooms/lobby/messages/").json()["results"]
    assert history[-1]["attachments"] == response.json()["attachments"]
    # A retry with the same client_msg_id answers the stored message; a new message cannot reuse them.
    again = api.post(
        "/api/rooms/lobby/messages/",
        {"body": "two files", "client_msg_id": "a-1", "attachments": [notes["id"], photo["id"]]},
        format="json",
    )
    assert again.status_code == 200 and again.json()["id"] == response.json()["id"]
    reuse = api.post(
        "/api/rooms/lobby/messages/",
        {"body": "again", "client_msg_id": "a-2", "attachments": [photo["id"]]},
        format="json",
    )
    assert reuse.status_code == 400 and reuse.json()["code"] == "invalid_attachment"


@pytest.mark.django_db
def test_a_message_with_someone_elses_or_another_rooms_upload_is_refused_and_not_stored(
    api, room, user, other_user
):
    from rooms.models import Message

    services.member_join(room=room, user=other_user)
    bob = client_for(other_user)
    bobs = upload(bob, "lobby", "b.txt", b"bob's", "text/plain").json()
    factories.make_room(created_by=user, slug="other")
    elsewhere = upload(api, "other", "o.txt", b"other room", "text/plain").json()
    for ids in ([bobs["id"]], [elsewhere["id"]], [999999], list(range(1, 12))):
        response = api.post(
            "/api/rooms/lobby/messages/",
            {"body": "x", "client_msg_id": f"x-{ids[0]}-{len(ids)}", "attachments": ids},
            format="json",
        )
        assert response.status_code == 400, (ids, response.content)
    assert not Message.objects.filter(room=room).exists()
    from rooms.models import Room

    assert Room.objects.get(pk=room.pk).last_seq == 0  # no seq used up either


@pytest.mark.django_db(transaction=True)
async def test_a_socket_send_carries_attachments_and_refuses_a_foreign_one_with_an_error_frame(
    joined, user, room
):
    from channels.db import database_sync_to_async

    from tests.conftest import new_client_msg_id

    def make(name):
        return attachments.attachment_upload(
            room=room, user=user, upload=SimpleUploadedFile(name, b"text body")
        )

    mine = await database_sync_to_async(make)("a.txt")
    await joined.send(
        {
            "type": "message.send",
            "body": "with file",
            "client_msg_id": new_client_msg_id(),
            "attachments": [mine.pk],
        }
    )
    frames = [await joined.receive(), await joined.receive()]
    message = next(f for f in frames if f["type"] == "message")
    assert [a["name"] for a in message["message"]["attachments"]] == ["a.txt"]
    await joined.send(
        {
            "type": "message.send",
            "body": "again",
            "client_msg_id": new_client_msg_id(),
            "attachments": [mine.pk],
        }
    )
    error = await joined.receive_type("error")
    assert error["code"] == "invalid_attachment"
    assert await joined.nothing_more()


@pytest.mark.django_db
def test_a_retry_answers_a_message_whose_shape_needs_no_query(user, room):
    """The socket's send path builds the retried message's shape on the event loop, where no
    query may run (a query there answered internal_error in the PostgreSQL fault tests)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rooms.serializers import message_data

    services.message_post(room=room, author=user, body="once", client_msg_id="r-1")
    again = services.message_post(room=room, author=user, body="once", client_msg_id="r-1")
    assert not again.created
    with CaptureQueriesContext(connection) as queries:
        assert message_data(again.message)["attachments"] == []
    assert len(queries) == 0


# --- the tester's findings: duplicates, names that disagree with the content, empty files, ------
# --- wrong types in ``attachments`` --------------------------------------------------------------


def png_bytes() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.django_db
def test_the_same_upload_twice_in_one_rest_message_is_refused_and_stays_usable(api, room, user):
    from rooms.models import Message, Room

    notes = upload(api, "lobby", "notes.txt", b"notes\n", "text/plain").json()
    response = api.post(
        "/api/rooms/lobby/messages/",
        {"body": "twice", "client_msg_id": "d-1", "attachments": [notes["id"], notes["id"]]},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_attachment" and response.json()["ids"] == [notes["id"]]
    assert not Message.objects.filter(room=room).exists()
    assert Room.objects.get(pk=room.pk).last_seq == 0
    assert Attachment.objects.get(pk=notes["id"]).message_id is None
    once = api.post(
        "/api/rooms/lobby/messages/",
        {"body": "once", "client_msg_id": "d-2", "attachments": [notes["id"]]},
        format="json",
    )
    assert once.status_code == 201, once.content
    assert [a["id"] for a in once.json()["attachments"]] == [notes["id"]]


@pytest.mark.django_db(transaction=True)
async def test_the_same_upload_twice_in_a_socket_send_gets_an_invalid_attachment_frame(joined, user, room):
    from channels.db import database_sync_to_async

    from rooms.models import Message
    from tests.conftest import new_client_msg_id

    def make():
        return attachments.attachment_upload(
            room=room, user=user, upload=SimpleUploadedFile("a.txt", b"text body")
        )

    mine = await database_sync_to_async(make)()
    await joined.send(
        {
            "type": "message.send",
            "body": "twice",
            "client_msg_id": new_client_msg_id(),
            "attachments": [mine.pk, mine.pk],
        }
    )
    error = await joined.receive_type("error")
    assert error["code"] == "invalid_attachment" and error["ids"] == [mine.pk]
    assert await joined.nothing_more()
    assert not await Message.objects.filter(room=room).aexists()
    await joined.send(
        {
            "type": "message.send",
            "body": "once",
            "client_msg_id": new_client_msg_id(),
            "attachments": [mine.pk],
        }
    )
    frames = [await joined.receive(), await joined.receive()]
    message = next(f for f in frames if f["type"] == "message")
    assert [a["id"] for a in message["message"]["attachments"]] == [mine.pk]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("evil\u202egnp.exe", "png"),  # cleaned to evilgnp.exe
        ("noext", "png"),
        (".png", "png"),  # cleaned to "png": no extension
        ("photo.png\u200b", "txt"),  # the invisible character goes, .png stays
        ("run.bat", "txt"),  # text, but the desktop runs it when opened
        ("evil\u202etxt.exe", "txt"),
        ("Setup.EXE", "txt"),
    ],
)
def test_a_name_whose_cleaned_extension_is_not_the_contents_is_refused(api, room, media, name, kind):
    data = png_bytes() if kind == "png" else b"echo hello\n"
    response = upload(api, "lobby", name, data, "image/png")
    assert response.status_code == 415, response.content
    assert response.json()["code"] == "unsupported_type"
    assert not Attachment.objects.exists() and not any(media.rglob("*.*"))


@pytest.mark.django_db
def test_a_name_that_agrees_after_cleaning_is_kept_and_served_with_its_type(api, room):
    body = upload(api, "lobby", "evil\u202egnp.PNG", png_bytes(), "image/png").json()
    assert body["name"] == "evilgnp.PNG" and body["content_type"] == "image/png"
    download = api.get(body["url"])
    assert download["Content-Type"] == "image/png"
    assert download["Content-Disposition"] == 'inline; filename="evilgnp.PNG"'
    text = upload(api, "lobby", "readme.md", b"# notes\n", "text/markdown").json()
    assert text["name"] == "readme.md" and text["content_type"] == "text/plain"


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["README", "notes", "data.json", "script.py", "Makefile", "build.sh"])
def test_text_may_have_any_name_that_is_not_another_types_or_runnable(api, room, name):
    body = upload(api, "lobby", name, b'{"echo": "hello"}\n', "application/octet-stream").json()
    assert body["name"] == name and body["content_type"] == "text/plain", body
    download = api.get(body["url"])
    assert download["Content-Type"].startswith("text/plain")
    assert download["Content-Disposition"].startswith("attachment;")


@pytest.mark.django_db
@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n"])
def test_an_empty_file_is_refused_with_its_own_code(api, room, media, data):
    response = upload(api, "lobby", "empty.txt", data, "text/plain")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "empty_file"
    assert "empty" in response.json()["detail"]
    assert not Attachment.objects.exists() and not any(media.rglob("*.*"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1", "be a list of attachment ids"),
        ({"id": 1}, "be a list of attachment ids"),
        ([1e308], "whole numbers"),
        ([1.0], "whole numbers"),
        (["1"], "whole numbers"),
        ([True], "whole numbers"),
        ([0], "whole numbers from 1"),
        ([2**63], "whole numbers from 1"),
        (list(range(1, 12)), "carries at most 10"),
    ],
)
def test_attachments_of_the_wrong_shape_get_a_message_saying_what_is_wrong(api, room, value, says):
    from rooms.serializers import MessageSendFrame

    frame = MessageSendFrame(data={"body": "x", "client_msg_id": "w", "attachments": value})
    assert not frame.is_valid()
    (error,) = frame.errors["attachments"]
    assert says in str(error) and error.code == "invalid", str(error)
    response = api.post(
        "/api/rooms/lobby/messages/",
        {"body": "x", "client_msg_id": "w", "attachments": value},
        format="json",
    )
    assert response.status_code == 400 and says in str(response.json()), response.content


def _zip_bytes() -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


def _jpeg_bytes() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(out, "JPEG")
    return out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name", ["report.docx", "sheet.xlsx", "deck.pptx", "notes.odt", "book.epub", "x.zip"]
)
def test_documents_that_are_zip_files_keep_their_own_extension(api, room, name):
    body = upload(api, "lobby", name, _zip_bytes()).json()
    assert body["name"] == name and body["content_type"] == "application/zip", body


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["photo.jfif", "photo.jpe", "photo.JPEG"])
def test_a_jpeg_saved_by_a_browser_under_jfif_or_jpe_is_kept(api, room, name):
    body = upload(api, "lobby", name, _jpeg_bytes()).json()
    assert body["name"] == name and body["content_type"] == "image/jpeg", body


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    ["run.bat . ", "run.bat. .", "run.bat\u3000", "link.url", "x.scf", "desk.rdp", "q.iqy", "tool.pyw"],
)
def test_a_runnable_name_is_refused_however_its_end_is_padded(api, room, media, name):
    """Windows drops trailing dots and spaces as it saves: "run.bat . " lands as run.bat."""
    response = upload(api, "lobby", name, b"start calc\n", "text/plain")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_type", response.content
    assert not Attachment.objects.exists() and not any(media.rglob("*.*"))
