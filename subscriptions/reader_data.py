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
- `export` returns JSON-serialisable values (DjangoJSONEncoder: dates, decimals);
  `None` leaves the part out of the export (e.g. secrets such as two-factor keys).
- Registering the same name again replaces the part (ready() may run more than once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from subscriptions.models import Subscriber


@dataclass(frozen=True)
class Reader:
    """Whose data it is: the account, its subscriber if any, and the addresses the
    reader has proved are theirs (never an unverified address someone else owns)."""

    user: AbstractBaseUser
    subscriber: Subscriber | None
    emails: frozenset[str]


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
    for part in _parts.values():
        if part.erase is not None:
            part.erase(reader)
