"""Footnotes written in the editor, numbered and listed when the body is shown.

The editor stores a note where it is referenced, as `<sup data-note="The note's
text"></sup>`, so moving, adding or deleting a note renumbers them all: numbers are
given here, in the order the notes appear, each time a body is shown. The site and
email get the linked form that imported Substack posts already use (content.py): a
reference `<sup><a id="fnref-N" href="#fn-N">N</a></sup>` and, at the end, the note
`<li id="fn-N">` with a link back. Numbering continues after any imported notes.

A free reader's body is cut at the paywall before this runs, so the notes list only the
notes of the part they may read.
"""

from __future__ import annotations

import re
from html import escape

from newsletter.services.content import MarkupRewriter, footnote_id, footnote_ref_id

_IMPORTED_NOTE_RE = re.compile(r'id="fn-(\d{1,4})"')


class _Footnotes(MarkupRewriter):
    def __init__(self, first: int) -> None:
        super().__init__()
        self.number = first - 1
        self.notes: list[tuple[int, str]] = []
        self.in_note = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "sup" and any(name == "data-note" for name, _ in attrs):
            note = next(value or "" for name, value in attrs if name == "data-note")
            self.number += 1
            self.notes.append((self.number, " ".join(note.split())))
            self.in_note = True
            self._emit(
                f'<sup><a id="{footnote_ref_id(self.number)}" href="#{footnote_id(self.number)}"'
                f' aria-label="Note {self.number}">{self.number}</a>'
            )
            return
        super().handle_starttag(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if self.in_note:
            self._emit("</sup>")
            self.in_note = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "sup" and self.in_note:
            self.in_note = False
        super().handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if not self.in_note:  # a note's marker shows its number, nothing else
            super().handle_data(data)

    def handle_entityref(self, name: str) -> None:
        if not self.in_note:
            super().handle_entityref(name)

    def handle_charref(self, name: str) -> None:
        if not self.in_note:
            super().handle_charref(name)


def render_footnotes(*, html: str) -> str:
    """Number the body's notes in order and list them, linked both ways, at its end."""
    if "data-note" not in html:
        return html
    imported = [int(n) for n in _IMPORTED_NOTE_RE.findall(html)]
    parser = _Footnotes(first=max(imported, default=0) + 1)
    parser.feed(html)
    parser.close()
    if not parser.notes:
        return html
    items = "".join(
        f'<li id="{footnote_id(number)}"><p>{escape(text)} '
        f'<a href="#{footnote_ref_id(number)}" aria-label="Back to the text of note '
        f'{number}">↩</a></p></li>'
        for number, text in parser.notes
    )
    start = parser.notes[0][0]
    start_attr = f' start="{start}"' if start != 1 else ""
    return (
        "".join(parser.out) + f'<div class="footnotes"><hr><h2 class="footnotes-title">Notes</h2>'
        f"<ol{start_attr}>{items}</ol></div>"
    )
