"""Input adapter for free-text clinical notes: files, folders and CSV exports -> ``Note`` records.

Notes arrive from many systems: UTF-8 exports, UTF-16 files saved by Windows tools, legacy
cp1252 text with smart quotes and degree signs, CRLF line ends, and CSV dumps such as
MTSamples (``description, medical_specialty, sample_name, transcription, keywords``). This
module turns all of them into one shape (``Note``: id, text with ``\\n`` line ends, optional
patient id, source, metadata) so the section / entity pipeline never sees encodings.

Nothing is silently dropped: a file or CSV row that cannot be used becomes a ``RejectedNote``
(source + reason) in ``load_notes`` / ``read_notes_csv``, and the single-file readers raise
``NoteReadError`` naming the file and the cause. Sizes are checked with ``os.stat`` before a
byte is read, so a stray multi-GB file cannot exhaust memory, and binary files (images, PDFs,
archives) are refused rather than decoded into garbage.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from trillium.core.errors import InputValidationError

__all__ = [
    "CSV_SIZE_FACTOR",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_SUFFIXES",
    "Note",
    "NoteReadError",
    "RejectedNote",
    "decode_text",
    "discover_notes",
    "load_notes",
    "read_note",
    "read_notes_csv",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

DEFAULT_MAX_BYTES = 2_000_000
"""Largest note file read (bytes) and longest CSV note text (characters) when the configuration
sets nothing else (``TRILLIUM_LIMIT_TEXT_BYTES``, read through ``trillium.core.untrusted``)."""


def _text_cap(max_bytes: int | None) -> int:
    from trillium.core.untrusted import limits

    return limits().text_bytes if max_bytes is None else max_bytes
CSV_SIZE_FACTOR = 50
"""A CSV file may hold up to this many maximal notes (``CSV_SIZE_FACTOR * max_chars`` bytes)."""
DEFAULT_SUFFIXES = (".txt", ".text", ".note", ".md")

_CONTROL_SHARE_MAX = 0.10  # above this share of control characters the data is binary, not text
# C0 / DEL / C1 control characters, except the layout ones a text note may hold (\t \n \f \r).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_HEADER_LINES = 5  # a patient-id header is looked for in this many first lines
_PATIENT_HEADER = re.compile(r"^\s*(?:patient[ _-]?id|mrn)\s*:\s*(?P<id>\S(?:.*\S)?)\s*$", re.IGNORECASE)
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


class NoteReadError(InputValidationError):
    """A note file, CSV file or input folder cannot be used; the message names it and the cause."""

    def __init__(self, source: str, cause: str) -> None:
        self.source = source
        self.cause = cause
        super().__init__(f"{source}: {cause}")

    def __reduce__(self) -> tuple[type[NoteReadError], tuple[str, str]]:
        # Default pickling would call cls(message): keep the error intact across process pools.
        return (type(self), (self.source, self.cause))


@dataclass(frozen=True)
class Note:
    """One free-text clinical note, decoded to ``str`` with ``\\n`` line ends.

    ``source`` says where it came from (a path, or ``"{path}:row {n}"`` for a CSV row);
    ``metadata`` keeps what came with it (``encoding``; CSV columns such as ``medical_specialty``).
    """

    note_id: str
    text: str
    patient_id: str | None = None
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RejectedNote:
    """Quarantine record for an input that could not become a ``Note``, so nothing is lost unseen."""

    source: str
    reason: str


# --------------------------------------------------------------------------- decoding


def _decode_bytes(data: bytes, source: str) -> tuple[str, str]:
    """Decode without the emptiness check (shared by notes and whole CSV files)."""
    encoding = ""
    for bom, name in _BOMS:
        if data.startswith(bom):
            encoding = name
            break
    if encoding.startswith("utf-16"):
        try:
            text = data[2:].decode(encoding)
        except UnicodeDecodeError as exc:
            raise NoteReadError(
                source, f"starts with a {encoding} byte-order mark but is not valid {encoding}: {exc.reason}"
            ) from exc
    else:
        if b"\x00" in data:
            raise NoteReadError(source, "binary data, not text (contains NUL bytes)")
        text = ""
        for name in (encoding or "utf-8", "cp1252", "latin-1"):
            try:
                text = data.decode(name)
            except UnicodeDecodeError:
                continue
            encoding = name
            break
    text = text.removeprefix("\ufeff")
    if text:
        controls = len(text) - len(_CONTROL.sub("", text))
        if controls / len(text) > _CONTROL_SHARE_MAX:
            raise NoteReadError(
                source,
                f"binary data, not text ({controls} of {len(text)} characters are control characters, "
                f"over {_CONTROL_SHARE_MAX:.0%})",
            )
    return text.replace("\r\n", "\n").replace("\r", "\n"), encoding


def decode_text(data: bytes, source: str, *, max_bytes: int | None = None) -> tuple[str, str]:
    """Decode a note's bytes to (text, encoding name), refusing binary data and empty notes.

    Tried in order: a byte-order mark (UTF-8, UTF-16 LE / BE), strict UTF-8, cp1252 (legacy
    Windows text: curly quotes, degree signs), latin-1 (cannot fail). NUL bytes outside UTF-16
    or more than 10 % control characters (other than tab, newline, carriage return, form feed)
    mean binary data: ``NoteReadError`` naming ``source``. Line ends become ``\\n`` and a leading
    BOM character is removed, so character offsets mean the same whatever system wrote the note.
    Bytes past ``max_bytes`` (the configured text limit by default) are refused before decoding.
    """
    cap = _text_cap(max_bytes)
    if len(data) > cap:
        raise NoteReadError(source, f"{len(data):,} bytes, over the limit of {cap:,} bytes for one note "
                                    "(TRILLIUM_LIMIT_TEXT_BYTES)")
    text, encoding = _decode_bytes(data, source)
    if not text.strip():
        raise NoteReadError(source, "empty note (no text other than whitespace)")
    return text, encoding


def _read_bytes(path: Path, max_bytes: int, *, what: str = "file") -> bytes:
    """Read a regular file after checking its size with ``os.stat``, so nothing oversized is loaded."""
    source = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise NoteReadError(source, f"{what} not found") from exc
    except PermissionError as exc:
        raise NoteReadError(source, "permission denied") from exc
    except OSError as exc:
        raise NoteReadError(source, f"cannot read: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise NoteReadError(source, f"is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise NoteReadError(source, f"not a regular file (device, pipe or socket), not a {what}")
    if st.st_size > max_bytes:
        raise NoteReadError(source, f"{what} is {st.st_size:,} bytes, over the limit of {max_bytes:,} bytes")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)  # +1: notice a file that grew since stat
    except PermissionError as exc:
        raise NoteReadError(source, "permission denied") from exc
    except OSError as exc:
        raise NoteReadError(source, f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise NoteReadError(source, f"{what} grew past the limit of {max_bytes:,} bytes while being read")
    return data


def _header_patient_id(text: str) -> str | None:
    """Patient id from a ``Patient ID: X`` / ``MRN: X`` / ``patient_id: X`` line among the first lines."""
    for line in text.split("\n", _HEADER_LINES)[:_HEADER_LINES]:
        match = _PATIENT_HEADER.match(line)
        if match:
            return match.group("id")
    return None


# --------------------------------------------------------------------------- single files and folders


def read_note(
    path: PathLike,
    *,
    note_id: str | None = None,
    patient_id: str | None = None,
    max_bytes: int | None = None,
) -> Note:
    """Read one text note; ``NoteReadError`` names the file when it is missing, too big, binary or empty.

    ``note_id`` defaults to the file stem. Without ``patient_id``, a ``Patient ID:`` / ``MRN:`` /
    ``patient_id:`` header within the first 5 lines supplies it; the text is kept unchanged so
    character offsets still match the file.
    """
    p = Path(path)
    cap = _text_cap(max_bytes)
    text, encoding = decode_text(_read_bytes(p, cap), str(p), max_bytes=cap)
    return Note(
        note_id=note_id if note_id is not None else p.stem,
        text=text,
        patient_id=patient_id if patient_id is not None else _header_patient_id(text),
        source=str(p),
        metadata={"encoding": encoding},
    )


def discover_notes(folder: PathLike, suffixes: Iterable[str] = DEFAULT_SUFFIXES) -> list[Path]:
    """Note files under ``folder`` (recursive, sorted, suffix case-insensitive), hidden files / dirs skipped.

    Hidden entries (``.git``, ``.DS_Store``, editor swap files) are never notes; the sort makes
    runs reproducible whatever order the file system lists entries in.
    """
    root = Path(folder)
    if not root.exists():
        raise NoteReadError(str(root), "folder not found")
    if not root.is_dir():
        raise NoteReadError(str(root), "not a folder")
    wanted = tuple(s.lower() for s in suffixes)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath, name) for name in filenames if not name.startswith(".") and name.lower().endswith(wanted)
        )
    return sorted(found)


# --------------------------------------------------------------------------- CSV


def _missing_column(source: str, role: str, column: str, columns: Sequence[str]) -> NoteReadError:
    available = ", ".join(repr(c) for c in columns) or "none"
    return NoteReadError(source, f"no {role} column {column!r}; available columns: {available}")


def _cell(value: object) -> str:
    """A CSV value as text: a field missing from a short row (NaN / None) is empty, never "nan"."""
    return value if isinstance(value, str) else ""


def read_notes_csv(
    path: PathLike,
    *,
    text_column: str = "transcription",
    id_column: str | None = None,
    patient_column: str | None = None,
    max_chars: int | None = None,
    encoding: str | None = None,
) -> tuple[list[Note], list[RejectedNote]]:
    """Read a CSV export with one note per row, e.g. MTSamples; returns (notes, rejected rows).

    Every value is read as a string (no NaN guessing). Without ``encoding`` the bytes are
    decoded like a note file (BOM, UTF-8, cp1252, latin-1), so Excel / legacy exports work. A row
    whose text is empty or longer than ``max_chars`` is rejected with source ``"{path}:row {n}"``,
    where ``n`` is the 1-based data row number (the header is not counted; a quoted multi-line
    field makes it differ from the file line number). ``note_id`` comes from ``id_column`` or is
    ``"{stem}-{n:05d}"``; every column other than the text / id / patient columns goes into
    ``metadata`` (with ``encoding``). The file itself may be at most ``CSV_SIZE_FACTOR * max_chars``
    bytes; a missing column raises ``NoteReadError`` listing the columns there are.
    """
    p = Path(path)
    source = str(p)
    max_chars = _text_cap(max_chars)
    data = _read_bytes(p, CSV_SIZE_FACTOR * max_chars, what="CSV file")
    if encoding is None:
        content, used_encoding = _decode_bytes(data, source)
    else:
        try:
            content = data.decode(encoding)
        except LookupError as exc:
            raise NoteReadError(source, f"unknown encoding {encoding!r}") from exc
        except UnicodeDecodeError as exc:
            raise NoteReadError(source, f"not valid {encoding} at byte {exc.start}: {exc.reason}") from exc
        content = content.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
        used_encoding = encoding
    if not content.strip():
        raise NoteReadError(source, "empty CSV file")
    try:
        frame = pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise NoteReadError(source, f"cannot parse CSV: {exc}") from exc
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if text_column not in columns:
        raise _missing_column(source, "text", text_column, columns)
    for role, column in (("id", id_column), ("patient", patient_column)):
        if column is not None and column not in columns:
            raise _missing_column(source, role, column, columns)
    special = {text_column, id_column, patient_column}
    extra = [c for c in columns if c not in special]

    notes: list[Note] = []
    rejected: list[RejectedNote] = []
    for n, row in enumerate(frame.to_dict("records"), start=1):
        row_source = f"{source}:row {n}"
        text = _cell(row[text_column])
        if not text.strip():
            rejected.append(RejectedNote(row_source, f"empty text in column {text_column!r}"))
            continue
        if len(text) > max_chars:
            rejected.append(
                RejectedNote(row_source, f"text is {len(text):,} characters, over the limit of {max_chars:,}")
            )
            continue
        if id_column is not None:
            note_id = _cell(row[id_column]).strip()
            if not note_id:
                rejected.append(RejectedNote(row_source, f"empty id in column {id_column!r}"))
                continue
        else:
            note_id = f"{p.stem}-{n:05d}"
        patient = _cell(row[patient_column]).strip() if patient_column is not None else ""
        metadata: dict[str, Any] = {c: _cell(row[c]) for c in extra}
        metadata.setdefault("encoding", used_encoding)
        notes.append(Note(note_id, text, patient or None, row_source, metadata))
    return _unique_ids(notes, set()), rejected


# --------------------------------------------------------------------------- many inputs


def _unique_ids(notes: list[Note], used: set[str]) -> list[Note]:
    """Suffix repeated note ids with -2, -3, ... (logging each), so ids stay usable as keys."""
    out: list[Note] = []
    for note in notes:
        note_id = note.note_id
        if note_id in used:
            k = 2
            while f"{note_id}-{k}" in used:
                k += 1
            note_id = f"{note_id}-{k}"
            logger.warning("duplicate note id %r from %s renamed to %r", note.note_id, note.source, note_id)
            note = replace(note, note_id=note_id)
        used.add(note_id)
        out.append(note)
    return out


def load_notes(
    inputs: PathLike | Sequence[PathLike],
    *,
    text_column: str = "transcription",
    max_bytes: int | None = None,
) -> tuple[list[Note], list[RejectedNote]]:
    """Load notes from folders, ``.csv`` files and text files (one or a list); returns (notes, rejected).

    One bad input must not stop a batch: each unreadable file (missing, binary, oversized,
    empty, CSV without ``text_column``) becomes a ``RejectedNote`` whose reason is the error
    message, as do rejected CSV rows, and the rest go on. Note ids repeated across inputs are
    made unique by suffixing ``-2``, ``-3``, ... with a logged warning. ``max_bytes`` limits a
    text file, and a CSV note's length in characters.
    """
    items: Sequence[PathLike] = [inputs] if isinstance(inputs, str | os.PathLike) else inputs
    notes: list[Note] = []
    rejected: list[RejectedNote] = []

    def reject(source: str, err: NoteReadError) -> None:
        logger.warning("note input rejected: %s", err)
        rejected.append(RejectedNote(source, str(err)))

    for item in items:
        p = Path(item)
        if p.is_dir():
            try:
                files = discover_notes(p)
            except NoteReadError as err:
                reject(str(p), err)
                continue
            if not files:
                logger.warning("no note files (%s) under %s", ", ".join(DEFAULT_SUFFIXES), p)
            for f in files:
                try:
                    notes.append(read_note(f, max_bytes=max_bytes))
                except NoteReadError as err:
                    reject(str(f), err)
        elif p.suffix.lower() == ".csv":
            try:
                csv_notes, csv_rejected = read_notes_csv(p, text_column=text_column, max_chars=max_bytes)
            except NoteReadError as err:
                reject(str(p), err)
                continue
            notes.extend(csv_notes)
            rejected.extend(csv_rejected)
            if csv_rejected:
                logger.warning("%d row(s) of %s rejected", len(csv_rejected), p)
        else:
            try:
                notes.append(read_note(p, max_bytes=max_bytes))
            except NoteReadError as err:
                reject(str(p), err)
    return _unique_ids(notes, set()), rejected
