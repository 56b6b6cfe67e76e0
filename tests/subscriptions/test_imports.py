"""Subscriber CSV import (command and admin), and the subscriber admin."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from subscriptions.models import Subscriber
from tests.factories import MembershipFactory, SubscriberFactory

pytestmark = pytest.mark.django_db

GOOD_AND_BAD = (
    "email,name,created_at,status\n"
    "ada@example.com,Ada Lovelace,2023-01-31,active\n"
    "BOB@Example.com,Bob,2023-02-01T09:30:00Z,\n"
    "not-an-email,Nobody,,active\n"
    "carol@example.com,Carol,31/01/2023,active\n"
    "dave@example.com,Dave,,subscribed-ish\n"
    '"erin@example.com","Erin, with a comma",,unsubscribed\n'
    "ada@example.com,Ada again,,active\n"
    "zoe@bücher.example,Zoë,,\n"
).encode() + "fr\xe9d@example.com,Fr\xe9d,,\n".encode("latin-1")
GOOD_AND_BAD += "zoë@example.com,Zoë,,\n".encode()


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(GOOD_AND_BAD)
    return path


def test_the_command_imports_valid_rows_and_reports_bad_ones_by_line(csv_file, capsys):
    with pytest.raises(CommandError, match="5 row"):
        call_command("import_subscribers", str(csv_file))

    out = capsys.readouterr().out
    assert "list.csv, line 4: 'not-an-email' is not a valid email address" in out
    assert "list.csv, line 5: created_at '31/01/2023' is not a date" in out
    assert "list.csv, line 6: status 'subscribed-ish'" in out
    assert "list.csv, line 10: not UTF-8" in out
    assert "list.csv, line 11: 'zoë@example.com' has non-ASCII characters before the @" in out
    assert "Subscribers created: 4" in out
    assert "Repeated within the import: 1" in out
    ada = Subscriber.objects.get(email="ada@example.com")
    assert ada.name == "Ada Lovelace"
    assert ada.status == Subscriber.Status.ACTIVE
    assert ada.consent_at == datetime(2023, 1, 31, tzinfo=UTC)
    assert Subscriber.objects.get(email="bob@example.com").status == "active"
    erin = Subscriber.objects.get(email="erin@example.com")
    assert (erin.name, erin.status) == ("Erin, with a comma", "unsubscribed")
    assert Subscriber.objects.get(email="zoe@xn--bcher-kva.example").name == "Zoë"
    assert not Subscriber.objects.filter(email__startswith="carol").exists()


def test_re_running_the_command_changes_nothing(csv_file):
    with pytest.raises(CommandError):
        call_command("import_subscribers", str(csv_file))
    before = list(Subscriber.objects.order_by("pk").values_list())
    with pytest.raises(CommandError):
        call_command("import_subscribers", str(csv_file))
    assert list(Subscriber.objects.order_by("pk").values_list()) == before


def test_an_existing_subscriber_is_left_as_they_are(tmp_path):
    SubscriberFactory(email="ada@example.com", name="Mrs Lovelace", status="unsubscribed")
    path = tmp_path / "one.csv"
    path.write_text("email,name,status\nADA@example.com,Ada,active\n")
    call_command("import_subscribers", str(path))
    ada = Subscriber.objects.get()
    assert (ada.name, ada.status) == ("Mrs Lovelace", "unsubscribed")


def test_trailing_empty_cells_are_fine_and_extra_values_are_refused(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("email,name\r\nada@example.com,Ada,,\r\nbob@example.com,Bob,surplus\r\n")
    with pytest.raises(CommandError, match="1 row"):
        call_command("import_subscribers", str(path))
    assert Subscriber.objects.get().name == "Ada"


def test_a_file_without_an_email_column_is_refused_and_nothing_imported(tmp_path):
    path = tmp_path / "wrong.csv"
    path.write_text("address,name\nada@example.com,Ada\n")
    with pytest.raises(CommandError, match="missing column"):
        call_command("import_subscribers", str(path))
    assert not Subscriber.objects.exists()


def test_the_admin_imports_a_csv_and_shows_the_bad_rows(editor_client):
    page = editor_client.get("/admin/subscriptions/subscriber/import/")
    assert page.status_code == 200
    assert b'type="file"' in page.content
    assert b"import/" in editor_client.get("/admin/subscriptions/subscriber/").content
    upload = SimpleUploadedFile("list.csv", GOOD_AND_BAD, content_type="text/csv")
    response = editor_client.post("/admin/subscriptions/subscriber/import/", {"csv_file": upload})
    assert response.status_code == 200
    assert b"list.csv, line 4:" in response.content
    assert b"Imported 4 new subscriber(s)" in response.content
    assert Subscriber.objects.count() == 4
    assert Subscriber.objects.filter(imported_from="admin import").count() == 4


def test_the_admin_import_explains_an_unusable_file(editor_client):
    upload = SimpleUploadedFile("x.csv", b"name\nAda\n", content_type="text/csv")
    response = editor_client.post("/admin/subscriptions/subscriber/import/", {"csv_file": upload})
    assert b"missing column(s) email" in response.content
    assert not Subscriber.objects.exists()


def test_the_subscriber_list_shows_counts_per_status_and_filters_paid_readers(editor_client):
    SubscriberFactory.create_batch(3)
    SubscriberFactory(status=Subscriber.Status.BOUNCED)
    paid = MembershipFactory(subscriber__email="paying@example.com").subscriber

    response = editor_client.get("/admin/subscriptions/subscriber/")
    assert response.status_code == 200
    counts = {value: n for value, _, n in response.context["status_counts"]}
    assert counts["active"] == 4
    assert counts["bounced"] == 1
    assert counts["pending"] == 0

    response = editor_client.get("/admin/subscriptions/subscriber/?paid=yes")
    assert list(response.context["cl"].result_list) == [paid]
    response = editor_client.get("/admin/subscriptions/subscriber/?paid=no")
    assert paid not in list(response.context["cl"].result_list)
    assert len(response.context["cl"].result_list) == 4


def rows_of(response) -> list[dict[str, str]]:
    content = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(content)))


def test_the_admin_exports_selected_and_all_subscribers_as_csv(editor_client):
    first = SubscriberFactory(email="one@example.com", name="=HYPERLINK(evil)")
    SubscriberFactory(email="two@example.com")
    MembershipFactory(subscriber=first)

    response = editor_client.post(
        "/admin/subscriptions/subscriber/",
        {"action": "export_csv", "_selected_action": [first.pk]},
    )
    rows = rows_of(response)
    assert [r["email"] for r in rows] == ["one@example.com"]
    assert rows[0]["paid"] == "yes"
    assert rows[0]["name"] == "'=HYPERLINK(evil)"

    rows = rows_of(editor_client.get("/admin/subscriptions/subscriber/export/"))
    assert sorted(r["email"] for r in rows) == ["one@example.com", "two@example.com"]


def test_the_export_link_exports_what_the_filtered_list_shows(editor_client):
    SubscriberFactory(email="kept@example.com", status=Subscriber.Status.BOUNCED)
    SubscriberFactory(email="other@example.com")
    page = editor_client.get("/admin/subscriptions/subscriber/?status__exact=bounced")
    assert b'href="export/?status__exact=bounced">Export these as CSV' in page.content

    rows = rows_of(
        editor_client.get("/admin/subscriptions/subscriber/export/?status__exact=bounced")
    )
    assert [r["email"] for r in rows] == ["kept@example.com"]
    rows = rows_of(editor_client.get("/admin/subscriptions/subscriber/export/?q=other"))
    assert [r["email"] for r in rows] == ["other@example.com"]


def test_the_admin_unsubscribe_action_takes_effect_at_once(editor_client):
    chosen = SubscriberFactory()
    other = SubscriberFactory()
    editor_client.post(
        "/admin/subscriptions/subscriber/",
        {"action": "unsubscribe", "_selected_action": [chosen.pk]},
    )
    chosen.refresh_from_db()
    other.refresh_from_db()
    assert chosen.status == Subscriber.Status.UNSUBSCRIBED
    assert "in the admin" in chosen.status_reason
    assert other.status == Subscriber.Status.ACTIVE


def test_staff_allowed_only_to_view_subscribers_cannot_unsubscribe_them(client):
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory

    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_subscriber"))
    client.force_login(viewer)
    reader = SubscriberFactory()
    assert client.get("/admin/subscriptions/subscriber/").status_code == 200  # they may look

    client.post(
        "/admin/subscriptions/subscriber/",
        {"action": "unsubscribe", "_selected_action": [reader.pk]},
    )

    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.ACTIVE


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_the_csv_export_defuses_every_cell_a_spreadsheet_would_run(editor_client, start):
    SubscriberFactory(email="one@example.com", name=f"{start}cmd|' /C calc'!A0")
    rows = rows_of(editor_client.get("/admin/subscriptions/subscriber/export/"))
    assert rows[0]["name"] == f"'{start}cmd|' /C calc'!A0"


def test_the_suppression_list_is_searchable_by_address(editor_client):
    from subscriptions.services.addresses import suppress

    suppress(email="Gone@Example.com", reason="account deleted")
    response = editor_client.get("/admin/subscriptions/suppression/?q=gone@example.com")
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1
    response = editor_client.get("/admin/subscriptions/suppression/?q=other@example.com")
    assert len(response.context["cl"].result_list) == 0
