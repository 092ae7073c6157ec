"""Clinical-note input adapter: real files in tmp_path, every encoding and failure a note export shows.

Each test writes bytes to disk the way another system would (UTF-16 from Windows tools, cp1252
legacy text, CRLF, MTSamples-style CSV, binary files in a notes folder) and checks what the
adapter makes of them: decoded text, metadata, and a clear error or quarantine record.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path

import pandas as pd
import pytest

from trillium.core.errors import InputValidationError
from trillium.medical.records.notes import (
    DEFAULT_MAX_BYTES,
    Note,
    NoteReadError,
    RejectedNote,
    decode_text,
    discover_notes,
    load_notes,
    read_note,
    read_notes_csv,
)

PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 200
CP1252_TEXT = "Temp 38.5\xb0C, patient\u2019s wife reports \u201cfever\u201d."
MTSAMPLES = pd.DataFrame(
    {
        "description": ["Sample cardiology consult.", "Empty one.", "Knee MRI."],
        "medical_specialty": [" Cardiovascular / Pulmonary", " Orthopedic", " Radiology"],
        "sample_name": ["Chest pain consult", "Blank", "MRI knee"],
        "transcription": ["HISTORY: Chest pain.\nPLAN: ECG.", "   ", "IMPRESSION: Torn meniscus."],
        "keywords": ["chest pain, ecg", "", "knee, mri"],
    }
)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("Fièvre 38.5°C\nPlan: rest.".encode(), "utf-8"),
        ("\ufeffFièvre 38.5°C\nPlan: rest.".encode(), "utf-8-sig"),
        ("\ufeffFièvre 38.5°C\nPlan: rest.".encode("utf-16-le"), "utf-16-le"),
        ("\ufeffFièvre 38.5°C\nPlan: rest.".encode("utf-16-be"), "utf-16-be"),
        ("Fièvre 38.5°C\nPlan: rest.".encode("utf-16"), "utf-16-le"),  # Python writes a LE BOM
    ],
)
def test_read_note_unicode_encodings(tmp_path: Path, data: bytes, encoding: str) -> None:
    note = read_note(_write(tmp_path / "n1.txt", data))
    assert note.text == "Fièvre 38.5°C\nPlan: rest."  # BOM gone, offsets start at the first letter
    assert note.metadata == {"encoding": encoding}
    assert note.note_id == "n1"
    assert note.source == str(tmp_path / "n1.txt")
    assert note.patient_id is None


def test_read_note_cp1252_legacy_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "legacy.txt", CP1252_TEXT.encode("cp1252"))
    note = read_note(path)
    assert note.text == CP1252_TEXT
    assert "38.5°C" in note.text and "\u2019" in note.text
    assert note.metadata["encoding"] == "cp1252"


def test_decode_text_latin1_fallback_for_bytes_cp1252_lacks() -> None:
    text, encoding = decode_text(b"caf\xe9 \x81 ok, patient resting", "x.txt")  # 0x81: undefined in cp1252
    assert encoding == "latin-1"
    assert text == "café \x81 ok, patient resting"


def test_crlf_and_cr_normalized(tmp_path: Path) -> None:
    note = read_note(_write(tmp_path / "crlf.txt", b"line one\r\nline two\rline three\r\n"))
    assert note.text == "line one\nline two\nline three\n"
    text, _ = decode_text("a\r\nb".encode("utf-16"), "u16")
    assert text == "a\nb"


def test_tabs_and_form_feeds_are_text() -> None:
    text, encoding = decode_text(b"a\tb\fc\n" * 10, "x")
    assert encoding == "utf-8" and text.count("\f") == 10


# --------------------------------------------------------------------------- refusals


def test_binary_file_refused_with_filename(tmp_path: Path) -> None:
    path = _write(tmp_path / "scan.txt", PNG_BYTES)
    with pytest.raises(NoteReadError, match="binary") as info:
        read_note(path)
    assert "scan.txt" in str(info.value)
    assert isinstance(info.value, InputValidationError)


def test_control_characters_without_nul_refused() -> None:
    data = bytes(range(1, 9)) * 20 + b"some text"
    with pytest.raises(NoteReadError, match=r"blob\.bin: binary data.*control characters"):
        decode_text(data, "blob.bin")


def test_utf16_bom_then_garbage_refused() -> None:
    with pytest.raises(NoteReadError, match="bad.txt"):
        decode_text(b"\xff\xfe" + b"\x01\x00\x02\x00\x03\x00" * 50, "bad.txt")
    with pytest.raises(NoteReadError, match="not valid utf-16-le"):
        decode_text(b"\xff\xfea\x00b", "odd.txt")  # odd byte count


def test_oversized_refused_before_reading(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.txt", b"x" * 150)
    with pytest.raises(NoteReadError) as info:
        read_note(path, max_bytes=100)
    message = str(info.value)
    assert "big.txt" in message and "150 bytes" in message and "limit of 100 bytes" in message
    assert read_note(path, max_bytes=150).text == "x" * 150  # the limit itself is allowed


@pytest.mark.parametrize("data", [b"", b"  \r\n\t \n", "\ufeff \n".encode("utf-16")])
def test_empty_note_refused(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(NoteReadError, match=r"empty\.txt: empty note"):
        read_note(_write(tmp_path / "empty.txt", data))


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(NoteReadError, match=r"nope\.txt: file not found"):
        read_note(tmp_path / "nope.txt")
    (tmp_path / "adir").mkdir()
    with pytest.raises(NoteReadError, match=r"adir: is a directory"):
        read_note(tmp_path / "adir")


def test_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(NoteReadError("a.txt", "empty note")))
    assert (str(err), err.source, err.cause) == ("a.txt: empty note", "a.txt", "empty note")


# --------------------------------------------------------------------------- patient id header


@pytest.mark.parametrize(
    "header",
    ["Patient ID: P-0042", "MRN:  P-0042 ", "patient_id: P-0042", "PATIENT ID:P-0042", "  mrn : P-0042"],
)
def test_patient_id_header(tmp_path: Path, header: str) -> None:
    content = f"Clinic note\n{header}\n\nHPI: cough for 3 days.\n"
    note = read_note(_write(tmp_path / "p.txt", content.encode()))
    assert note.patient_id == "P-0042"
    assert note.text == content  # header kept: offsets still match the file


def test_patient_id_header_limits(tmp_path: Path) -> None:
    late = "\n".join(["line"] * 5 + ["MRN: 99"])  # sixth line: not a header
    assert read_note(_write(tmp_path / "late.txt", late.encode())).patient_id is None
    path = _write(tmp_path / "given.txt", b"MRN: 99\nnote")
    assert read_note(path, patient_id="P-1", note_id="custom").patient_id == "P-1"
    assert read_note(path, note_id="custom").note_id == "custom"
    prose = _write(tmp_path / "prose.txt", b"The MRN: was not recorded today\n")
    assert read_note(prose).patient_id is None  # the key must start its line


# --------------------------------------------------------------------------- CSV


def test_csv_mtsamples_layout(tmp_path: Path) -> None:
    path = tmp_path / "mtsamples.csv"
    MTSAMPLES.to_csv(path)  # index column too, as the public MTSamples file has
    notes, rejected = read_notes_csv(path)
    assert [n.note_id for n in notes] == ["mtsamples-00001", "mtsamples-00003"]
    first = notes[0]
    assert first.text == "HISTORY: Chest pain.\nPLAN: ECG."
    assert first.source == f"{path}:row 1"
    assert first.metadata["medical_specialty"] == " Cardiovascular / Pulmonary"
    assert first.metadata["description"] == "Sample cardiology consult."
    assert first.metadata["sample_name"] == "Chest pain consult"
    assert first.metadata["keywords"] == "chest pain, ecg"
    assert first.metadata["encoding"] == "utf-8"
    assert "transcription" not in first.metadata
    assert rejected == [RejectedNote(f"{path}:row 2", "empty text in column 'transcription'")]


def test_csv_id_patient_columns_and_limits(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"id": ["a", "", "c", "d"], "mrn": ["M1", "M2", "", "M4"], "text": ["short", "ok", "fine", "x" * 30]}
    )
    path = tmp_path / "notes.csv"
    frame.to_csv(path, index=False)
    notes, rejected = read_notes_csv(path, text_column="text", id_column="id", patient_column="mrn", max_chars=20)
    assert [(n.note_id, n.patient_id, n.metadata) for n in notes] == [
        ("a", "M1", {"encoding": "utf-8"}),
        ("c", None, {"encoding": "utf-8"}),
    ]
    assert [r.source for r in rejected] == [f"{path}:row 2", f"{path}:row 4"]
    assert "empty id" in rejected[0].reason
    assert "30 characters" in rejected[1].reason and "limit of 20" in rejected[1].reason


def test_csv_missing_column_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    pd.DataFrame({"note_text": ["a"], "specialty": ["b"]}).to_csv(path, index=False)
    with pytest.raises(NoteReadError) as info:
        read_notes_csv(path)
    message = str(info.value)
    assert "other.csv" in message and "'transcription'" in message
    assert "'note_text'" in message and "'specialty'" in message
    with pytest.raises(NoteReadError, match="no id column 'nid'"):
        read_notes_csv(path, text_column="note_text", id_column="nid")


def test_csv_cp1252(tmp_path: Path) -> None:
    content = f'medical_specialty,transcription\r\nGeneral,"{CP1252_TEXT}\r\nSecond line."\r\n'
    path = _write(tmp_path / "legacy.csv", content.encode("cp1252"))
    notes, rejected = read_notes_csv(path)
    assert rejected == []
    assert notes[0].text == CP1252_TEXT + "\nSecond line."
    assert notes[0].metadata == {"medical_specialty": "General", "encoding": "cp1252"}


def test_csv_explicit_encoding_and_short_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "u16.csv", "transcription,extra\nnote one,x\nnote two\n".encode("utf-16-le"))
    with pytest.raises(NoteReadError, match="binary"):
        read_notes_csv(path)  # UTF-16 without a BOM is indistinguishable from binary
    notes, rejected = read_notes_csv(path, encoding="utf-16-le")
    assert rejected == []
    assert [n.text for n in notes] == ["note one", "note two"]
    assert notes[1].metadata == {"extra": "", "encoding": "utf-16-le"}  # missing field -> "", never "nan"
    with pytest.raises(NoteReadError, match="unknown encoding"):
        read_notes_csv(path, encoding="no-such-codec")


def test_csv_oversized_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    pd.DataFrame({"transcription": ["y" * 9] * 20}).to_csv(path, index=False)
    with pytest.raises(NoteReadError, match=r"big\.csv: CSV file is \d+ bytes, over the limit of 100 bytes"):
        read_notes_csv(path, max_chars=2)  # 50 x 2 = 100 bytes


# --------------------------------------------------------------------------- folders and load_notes


def _notes_folder(root: Path) -> Path:
    _write(root / "a.txt", b"Note A: stable.")
    _write(root / "sub" / "b.note", "Note B 38\xb0C".encode("cp1252"))
    _write(root / "sub" / "deeper" / "c.MD", b"# Note C")
    _write(root / "sub" / "image.txt", PNG_BYTES)
    _write(root / ".hidden.txt", b"not a note")
    _write(root / ".git" / "d.txt", b"not a note either")
    _write(root / "readme.pdf", b"%PDF-1.4")
    return root


def test_discover_notes(tmp_path: Path) -> None:
    root = _notes_folder(tmp_path / "notes")
    found = [p.relative_to(root).as_posix() for p in discover_notes(root)]
    assert found == ["a.txt", "sub/b.note", "sub/deeper/c.MD", "sub/image.txt"]
    with pytest.raises(NoteReadError, match="folder not found"):
        discover_notes(tmp_path / "missing")
    with pytest.raises(NoteReadError, match="not a folder"):
        discover_notes(root / "a.txt")


def test_load_folder_quarantines_binary_and_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _notes_folder(tmp_path / "notes")
    with caplog.at_level(logging.WARNING, logger="trillium.medical.records.notes"):
        notes, rejected = load_notes(root)
    assert [n.note_id for n in notes] == ["a", "b", "c"]
    assert notes[1].text == "Note B 38°C" and notes[1].metadata["encoding"] == "cp1252"
    assert len(rejected) == 1
    assert rejected[0].source == str(root / "sub" / "image.txt")
    assert "image.txt" in rejected[0].reason and "binary" in rejected[0].reason
    assert "image.txt" in caplog.text


def test_load_mixed_inputs_and_duplicate_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = _write(tmp_path / "x" / "visit.txt", b"first visit")
    second = _write(tmp_path / "y" / "visit.txt", b"second visit")
    third = _write(tmp_path / "z" / "visit.md", b"third visit")
    csv_path = tmp_path / "visit.csv"
    pd.DataFrame({"nid": ["visit", "other"], "transcription": ["csv one", ""]}).to_csv(csv_path, index=False)
    big = _write(tmp_path / "big.txt", b"z" * 64)
    with caplog.at_level(logging.WARNING, logger="trillium.medical.records.notes"):
        notes, rejected = load_notes(
            [first, str(second), tmp_path / "z", csv_path, tmp_path / "gone.txt", big], max_bytes=32
        )
    assert [(n.note_id, n.text) for n in notes] == [
        ("visit", "first visit"),
        ("visit-2", "second visit"),
        ("visit-3", "third visit"),
        ("visit-00001", "csv one"),
    ]
    assert notes[2].source == str(third)
    assert "duplicate note id 'visit'" in caplog.text
    reasons = {r.source: r.reason for r in rejected}
    assert reasons[f"{csv_path}:row 2"] == "empty text in column 'transcription'"
    assert "file not found" in reasons[str(tmp_path / "gone.txt")]
    assert "64 bytes" in reasons[str(big)] and "limit of 32 bytes" in reasons[str(big)]
    assert len(rejected) == 3


def test_load_single_csv_with_missing_column_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"body": ["a"]}).to_csv(path, index=False)
    notes, rejected = load_notes(path)
    assert notes == []
    assert rejected[0].source == str(path) and "'body'" in rejected[0].reason
    notes, rejected = load_notes(path, text_column="body")
    assert [n.text for n in notes] == ["a"] and rejected == []


def test_duplicate_suffix_skips_taken_ids(tmp_path: Path) -> None:
    a = _write(tmp_path / "a" / "n.txt", b"one")
    b = _write(tmp_path / "b" / "n-2.txt", b"two")
    c = _write(tmp_path / "c" / "n.txt", b"three")
    notes, _ = load_notes([a, b, c])
    assert [n.note_id for n in notes] == ["n", "n-2", "n-3"]


def test_defaults() -> None:
    assert DEFAULT_MAX_BYTES == 2_000_000
    note = Note("id", "text")
    assert (note.patient_id, note.source, note.metadata) == (None, "", {})
    with pytest.raises(dataclasses.FrozenInstanceError, match="'text'"):
        note.text = "changed"  # type: ignore[misc]
