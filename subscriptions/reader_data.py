"""The one hook for a reader's data: what each app exports and erases of its own.

A reader's account page offers a JSON export of everything stored about them and the
erasure of their account (`subscriptions.services.accounts`). Readers and money sit
below content in the layers, so subscriptions cannot know every table that holds
something of a reader's; instead each app registers the parts it owns, here, from its
`AppConfig.ready()`:

    from subscriptions.reader_data import Reader, register_reader_data

    def _export_opens(reader: Reader) -> list[dict]:
        ...  # rows of this reader's, as JSON-ready values

    def _erase_opens(reader: Reader) -> None:
        ...  # delete or anonymise them

    register_reader_data(
        name="opens",                      # the key in the export
        models=["newsletter.Open"],        # every model this part answers for
        export=_export_opens,
        erase=_erase_opens,
    )

Today's parts: subscriptions registers the account, its addresses, the subscriber,
memberships, donations, gifts, group invites and Stripe events
(`subscriptions.services.accounts.register_reader_data_parts`); newsletter registers
deliveries, comments and comment bans (`newsletter.services.reader_data`).
`reader_data_parts()` is the list, in registration order (INSTALLED_APPS order).

The rules a part follows:
- `models` names every model whose rows point at a reader: a foreign key or one-to-one
  to the user or the subscriber, or an email field that can hold their address.
  tests/test_reader_data.py fails for any installed model with such a
  field that no part names, so a new model is registered before it ships.
- `erase` runs inside the deletion's transaction, before the subscriber and the user
  are deleted; rows that those deletions cascade to need none (say so by naming the
  model with `erase=None`). It must leave no row that references the reader or holds
  their address or anything they wrote or received. A part may keep an anonymous
  bookkeeping record (a donation's amount and date).
- The admin's history goes with the rows: before the parts run, the hook notes every
  row of the registered models that points at the reader (a foreign key to the user or
  the subscriber, or an email field holding one of their addresses); afterwards it
  deletes the admin log entries about those rows, and any entry whose text names one of
  the reader's addresses, names or username (`erase_reader_parts`). A part need not
  erase admin history itself.
- `export` returns JSON-serialisable values (DjangoJSONEncoder: dates, decimals);
  `None` leaves the part out of the export (e.g. secrets such as two-factor keys).
- Registering the same name again replaces the part (ready() may run more than once).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from subscriptions.models import Subscriber


@dataclass(frozen=True)
class Reader:
    """Whose data it is: the account, its subscriber if any, and the addresses the
    reader has proved are theirs (never an unverified address someone else owns), and
    the names they go by (username, account and subscriber name)."""

    user: AbstractBaseUser
    subscriber: Subscriber | None
    emails: frozenset[str]
    names: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ReaderDataPart:
    name: str
    models: tuple[str, ...]
    export: Callable[[Reader], Any] | None
    erase: Callable[[Reader], None] | None


_parts: dict[str, ReaderDataPart] = {}


def row(obj: models.Model, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """One row as the export shows it: every concrete field by its column name."""
    return {
        field.attname: getattr(obj, field.attname)
        for field in obj._meta.concrete_fields
        if field.attname not in exclude
    }


def register_reader_data(
    *,
    name: str,
    models: Iterable[str],
    export: Callable[[Reader], Any] | None = None,
    erase: Callable[[Reader], None] | None = None,
) -> None:
    """Add (or replace) the part called `name`; `models` are "app_label.ModelName"."""
    _parts[name] = ReaderDataPart(name=name, models=tuple(models), export=export, erase=erase)


def reader_data_parts() -> tuple[ReaderDataPart, ...]:
    return tuple(_parts.values())


def models_with_reader_data() -> set[str]:
    """Every model some part answers for."""
    return {label for part in _parts.values() for label in part.models}


def export_reader_parts(*, reader: Reader) -> dict[str, Any]:
    return {part.name: part.export(reader) for part in _parts.values() if part.export}


def erase_reader_parts(*, reader: Reader) -> None:
    rows = _rows_of(reader)  # before the parts anonymise them out of reach
    for part in _parts.values():
        if part.erase is not None:
            part.erase(reader)
    _erase_admin_history(reader=reader, rows=rows)


def _rows_of(reader: Reader) -> dict[type[models.Model], set[Any]]:
    """The pks of every row of the registered models that points at the reader."""
    User = get_user_model()
    Subscriber = apps.get_model("subscriptions", "Subscriber")
    found: dict[type[models.Model], set[Any]] = {User: {reader.user.pk}}
    if reader.subscriber is not None:
        found[Subscriber] = {reader.subscriber.pk}
    for label in sorted(models_with_reader_data()):
        model = apps.get_model(label)
        if model._meta.auto_created:
            continue  # a many-to-many table: the admin never logs its rows
        match = Q(pk__in=[])
        for column in model._meta.concrete_fields:
            if column.is_relation and column.related_model is User:
                match |= Q(**{column.attname: reader.user.pk})
            elif column.is_relation and column.related_model is Subscriber and reader.subscriber:
                match |= Q(**{column.attname: reader.subscriber.pk})
            elif isinstance(column, models.EmailField) and reader.emails:
                match |= Q(**{f"{column.attname}__in": reader.emails})
        pks = set(model._base_manager.filter(match).values_list("pk", flat=True))
        if pks:
            found.setdefault(model, set()).update(pks)
    return found


def _mentions(reader: Reader) -> re.Pattern[str] | None:
    """A whole address, name or username of the reader's, in any case: not part of a
    longer one (margarita@example.com, rita@example.com.au, reader-rita2)."""
    terms = [t for t in {*reader.emails, *reader.names} if t and t.strip()]
    if not terms:
        return None
    alternatives = "|".join(re.escape(t.strip()) for t in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<![\w.%+-])(?:{alternatives})(?![\w@-]|\.[\w-])", re.IGNORECASE)


def _erase_admin_history(*, reader: Reader, rows: dict[type[models.Model], set[Any]]) -> None:
    """The admin log entries about the reader's rows (erased or anonymised by now), and
    those whose text names them: an entry keeps the object's repr and the change
    message, which hold the address or the name."""
    about = Q(pk__in=[])
    for model, pks in rows.items():
        content_type = ContentType.objects.get_for_model(model, for_concrete_model=False)
        about |= Q(content_type=content_type, object_id__in=[str(pk) for pk in pks])
    LogEntry.objects.filter(about).delete()
    pattern = _mentions(reader)
    if pattern is None:
        return
    naming = Q(pk__in=[])
    for term in {*reader.emails, *reader.names}:
        if term.strip():
            term = term.strip()
            naming |= Q(object_repr__icontains=term) | Q(change_message__icontains=term)
    candidates = LogEntry.objects.filter(naming).values_list("pk", "object_repr", "change_message")
    LogEntry.objects.filter(
        pk__in=[
            pk
            for pk, text, message in candidates
            if pattern.search(text) or pattern.search(message)
        ]
    ).delete()
