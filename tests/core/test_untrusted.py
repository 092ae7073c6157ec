"""The guarded way in (trillium.core.untrusted) and the readers that use it: upload names,
archive and decompression bombs, each refused quickly, with bounded memory, writing nothing."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, RLELossless, generate_uid

from trillium.core.errors import ConfigError, InputValidationError, RegistryError
from trillium.core.untrusted import (
    LimitExceededError,
    Limits,
    UnsafeNameError,
    iter_archive,
    limits,
    list_archive,
    safe_member_name,
    save_upload,
)
from trillium.manufacturing.images import ImageReadError, read_image
from trillium.medical.imaging.analyzer import analyze_upload, save_study_upload
from trillium.medical.imaging.dicom_io import load_ct
from trillium.medical.imaging.dicom_write import write_ct_series
from trillium.medical.records.notes import NoteReadError, decode_text, read_note

MiB = 1024**2


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (what a refusal must leave unchanged)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _measured(fn):
    """(exception raised by fn, seconds, peak Python memory in bytes)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        raised = exc
    else:
        raised = None
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return raised, seconds, peak


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --------------------------------------------------------------------------- limits


def test_limits_defaults_fit_the_field_and_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    lim = limits()
    assert lim == Limits()
    # a CT series of 2,000 slices of 512 x 512 at 16 bits passes every default with room to spare
    slice_bytes = 512 * 512 * 2 + 4096
    assert lim.archive_members >= 2_000 and lim.archive_bytes >= 2_000 * slice_bytes
    assert lim.member_bytes >= slice_bytes and lim.dicom_pixel_bytes >= 512 * 512 * 2
    assert lim.archive_members < 100_000 and lim.image_pixels < 100_000 * 100_000
    monkeypatch.setenv("TRILLIUM_LIMIT_ARCHIVE_MEMBERS", "1_000")
    monkeypatch.setenv("TRILLIUM_LIMIT_TEXT_BYTES", "500")
    assert limits().archive_members == 1000 and limits().text_bytes == 500
    monkeypatch.setenv("TRILLIUM_LIMIT_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match=r"TRILLIUM_LIMIT_IMAGE_PIXELS='lots': expected a positive integer"):
        limits()
    monkeypatch.setenv("TRILLIUM_LIMIT_IMAGE_PIXELS", "0")
    with pytest.raises(ConfigError, match="TRILLIUM_LIMIT_IMAGE_PIXELS=0"):
        limits()


# --------------------------------------------------------------------------- upload names


@pytest.mark.parametrize("client_name", ["../../trillium.db", "/etc/passwd", "..\\..\\x.zip", "ok.zip"])
def test_save_upload_never_uses_the_client_name_as_a_path(tmp_path: Path, client_name: str) -> None:
    home = tmp_path / "home"
    folder = home / "uploads" / "ct"
    (home / "trillium.db").parent.mkdir(parents=True, exist_ok=True)
    (home / "trillium.db").write_bytes(b"the database")
    before = _tree(tmp_path)
    path = save_upload(b"PK payload", folder, suffix=".zip", label=client_name)
    assert path.parent == folder and path.suffix == ".zip" and len(path.stem) == 32
    after = _tree(tmp_path)
    new = set(after) - set(before)
    assert new == {path.relative_to(tmp_path).as_posix()}  # one file, inside the folder, nothing else
    assert after["home/trillium.db"] == b"the database" and path.read_bytes() == b"PK payload"


def test_save_upload_over_the_limit_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRILLIUM_LIMIT_UPLOAD_BYTES", "1000")
    with pytest.raises(LimitExceededError, match=r"big\.zip: the upload is 1,001, above the limit of 1,000 "
                                                 r"\(TRILLIUM_LIMIT_UPLOAD_BYTES"):
        save_upload(b"x" * 1001, tmp_path / "up", suffix=".zip", label="big.zip")
    # a stream is counted as it is copied: refused part way, the partial file is removed
    with pytest.raises(LimitExceededError, match="stream.zip"):
        save_upload(io.BytesIO(b"x" * 5000), tmp_path / "up", suffix=".zip", label="stream.zip")
    assert list((tmp_path / "up").iterdir()) == []
    with pytest.raises(ValueError, match="suffix"):
        save_upload(b"x", tmp_path / "up", suffix="/../x", label="a")


@pytest.mark.parametrize("name", ["../x.dcm", "a/../../x.dcm", "/etc/x.dcm", "\\\\host\\x.dcm", "C:x.dcm",
                                  "a\\..\\..\\x.dcm", "", "a\x00b"])
def test_unsafe_member_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeNameError, match="up.zip: archive member"):
        safe_member_name(name, "up.zip")


def test_safe_member_names_pass() -> None:
    assert safe_member_name("study/series 1/IM0001", "up.zip") == "study/series 1/IM0001"
    assert safe_member_name("a\\b.dcm", "up.zip") == "a/b.dcm"
    assert safe_member_name("a/..b/c..", "up.zip") == "a/..b/c.."


def test_study_upload_named_to_climb_out_lands_inside_uploads(trillium_home: Path) -> None:
    trillium_home.mkdir(parents=True, exist_ok=True)
    (trillium_home / "trillium.db").write_bytes(b"db")
    data = _zip_bytes({"IM1.dcm": b"not really dicom"})
    for name in ("../../trillium.db", "/tmp/evil.zip", "../trillium.db"):
        path = save_study_upload(data, name)
        assert path.parent == trillium_home / "uploads" / "ct" and path.read_bytes() == data
    assert (trillium_home / "trillium.db").read_bytes() == b"db"
    assert sorted(p.parent for p in trillium_home.rglob("*.zip")) == [trillium_home / "uploads" / "ct"] * 3


def test_refused_or_failed_study_upload_leaves_no_file(trillium_home: Path) -> None:
    with pytest.raises(InputValidationError, match="evil.zip: archive member '../../x.dcm' climbs out"):
        save_study_upload(_zip_bytes({"../../x.dcm": b"x"}), "evil.zip")
    with pytest.raises(InputValidationError, match="notes.txt: not a zip archive"):
        save_study_upload(b"just some text, not a zip", "notes.txt")

    class Failing:
        def analyze(self, path: Path) -> None:
            assert path.is_file()  # the analyzer reads the saved copy...
            raise InputValidationError(f"{path}: no DICOM files found")

    with pytest.raises(InputValidationError, match="no DICOM files found"):
        analyze_upload(_zip_bytes({"a.txt": b"x"}), "study.zip", Failing())  # type: ignore[arg-type]

    def no_model() -> None:
        raise RegistryError("no model chest-ct-nodules:production (train one with: trillium medical train)")

    loads: list[str] = []
    with pytest.raises(InputValidationError, match="climbs out"):  # refused before any model is loaded
        analyze_upload(_zip_bytes({"../x.dcm": b"x"}), "evil.zip", lambda: loads.append("loaded"))  # type: ignore[arg-type]
    assert loads == []
    with pytest.raises(RegistryError, match="train one"):  # the model cannot load: the saved upload goes too
        analyze_upload(_zip_bytes({"a.dcm": b"x"}), "study.zip", no_model)  # type: ignore[arg-type]
    assert not [p for p in trillium_home.rglob("*") if p.is_file() and "uploads" in p.parts]  # ...then it is gone


# --------------------------------------------------------------------------- archive bombs


def test_zip_of_100000_members_is_refused_quickly_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(100_000):
            zf.writestr(f"{i}", b"")
    raised, seconds, peak = _measured(lambda: list_archive(path))
    assert isinstance(raised, LimitExceededError), raised
    assert "many.zip: the archive's member count is 100,000, above the limit of 20,000" in str(raised)
    # refused from the end record: zipfile would build 100,000 ZipInfo objects (tens of MB) to list it
    assert seconds < 1.0 and peak < 1 * MiB, (seconds, peak)
    raised, _, _ = _measured(lambda: load_ct(path))
    assert isinstance(raised, LimitExceededError) and "many.zip" in str(raised)


def test_member_expanding_past_the_limit_is_refused_before_expanding(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRILLIUM_LIMIT_MEMBER_BYTES", str(8 * MiB))
    path = tmp_path / "bomb.zip"
    path.write_bytes(_zip_bytes({"ok.dcm": b"x" * 100, "zeros.dcm": bytes(64 * MiB)}))
    assert path.stat().st_size < 200_000  # a small zip...
    raised, seconds, peak = _measured(lambda: load_ct(path))
    assert isinstance(raised, LimitExceededError), raised  # ...whose member would expand to 64 MB
    assert "bomb.zip!zeros.dcm: the member's declared expanded size is 67,108,864" in str(raised)
    assert "TRILLIUM_LIMIT_MEMBER_BYTES" in str(raised)
    assert seconds < 2.0 and peak < 4 * MiB, (seconds, peak)


def test_members_expanding_past_the_archive_total_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRILLIUM_LIMIT_ARCHIVE_BYTES", str(16 * MiB))
    path = tmp_path / "total.zip"
    path.write_bytes(_zip_bytes({f"{i}.dcm": bytes(5 * MiB) for i in range(4)}))
    with pytest.raises(LimitExceededError, match=r"total.zip: the members' declared expanded size is 20,971,520, "
                                                 r"above the limit of 16,777,216"):
        load_ct(path)


def _lie_about_size(data: bytes, declared: int) -> bytes:
    """Rewrite every header's uncompressed size (local and central) to ``declared``."""
    out = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (pos := out.find(sig, start)) >= 0:
            out[pos + offset:pos + offset + 4] = struct.pack("<I", declared)
            start = pos + 4
    return bytes(out)


def test_a_member_whose_header_lies_is_cut_off_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # declared: 1 kB; actual: 64 MB of zeros. Counting what comes out refuses it at the limit.
    monkeypatch.setenv("TRILLIUM_LIMIT_MEMBER_BYTES", str(8 * MiB))
    path = tmp_path / "liar.zip"
    path.write_bytes(_lie_about_size(_zip_bytes({"zeros.dcm": bytes(64 * MiB)}), 1024))
    members = list_archive(path)
    assert [(m.name, m.declared_bytes) for m in members] == [("zeros.dcm", 1024)]  # the listing believes it...
    raised, _, peak = _measured(lambda: list(iter_archive(path)))
    assert isinstance(raised, InputValidationError), raised  # ...reading does not
    assert "liar.zip!zeros.dcm" in str(raised)
    assert peak < 12 * MiB, peak
    with pytest.raises(InputValidationError, match="liar.zip!zeros.dcm"):
        load_ct(path)


def test_a_real_series_in_a_zip_still_loads(tmp_path: Path) -> None:
    hu = np.random.default_rng(0).integers(-1000, 400, size=(6, 16, 16)).astype(np.int16)
    files = write_ct_series(hu, tmp_path / "s", spacing=(2.0, 0.7, 0.7))
    path = tmp_path / "study.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"series/{f.name}")
        zf.writestr("series/README.txt", "exported by a PACS")
    volume = load_ct(path)
    assert np.array_equal(volume.hu, hu)


# --------------------------------------------------------------------------- image and DICOM bombs


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_png_declaring_100000_by_100000_pixels_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    raised, seconds, peak = _measured(lambda: read_image(path))
    assert isinstance(raised, ImageReadError), raised
    assert "bomb.png" in str(raised) and ("too large" in str(raised) or "above the limit" in str(raised))
    assert seconds < 1.0 and peak < 4 * MiB, (seconds, peak)


def test_image_pixel_limit_comes_from_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "ok.png")
    assert read_image(tmp_path / "ok.png").shape == (40, 50, 1)
    monkeypatch.setenv("TRILLIUM_LIMIT_IMAGE_PIXELS", "1999")
    with pytest.raises(ImageReadError, match=r"ok.png.*2,000 pixels, above the limit of 1,999.*"
                                             r"TRILLIUM_LIMIT_IMAGE_PIXELS"):
        read_image(tmp_path / "ok.png")


def _ct_slice(path: Path, *, rows: int, cols: int, frames: int | None = None, syntax=RLELossless,
              pixel_data: bytes = b"\x00" * 64) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", generate_uid(), generate_uid()
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.Rows, ds.Columns = [0.7, 0.7], rows, cols
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames is not None:
        ds.NumberOfFrames = frames
    if syntax == RLELossless:  # an encapsulated fragment, as a compressed syntax requires
        from pydicom.encaps import encapsulate

        pixel_data = encapsulate([pixel_data])
    ds.PixelData = pixel_data
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_header_declaring_a_huge_frame_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _ct_slice(tmp_path / "huge.dcm", rows=65535, cols=65535, frames=1000)
    assert path.stat().st_size < 2000
    raised, seconds, peak = _measured(lambda: load_ct(path))
    assert isinstance(raised, LimitExceededError), raised
    assert "huge.dcm: 65535 x 65535 x 1000 frames x 1 samples x 2 bytes is 8,589,672,450,000" in str(raised)
    assert "TRILLIUM_LIMIT_DICOM_PIXEL_BYTES" in str(raised)
    assert seconds < 1.0 and peak < 4 * MiB, (seconds, peak)
    # inside a folder of otherwise readable files, the bomb is not skipped as "not DICOM": it is refused
    folder = tmp_path / "folder"
    folder.mkdir()
    _ct_slice(folder / "huge.dcm", rows=65535, cols=65535)
    (folder / "README.txt").write_text("x")
    with pytest.raises(LimitExceededError, match=r"huge.dcm: 65535 x 65535 x 1 frames"):
        load_ct(folder)


def test_deflated_dicom_inflating_past_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRILLIUM_LIMIT_MEMBER_BYTES", str(4 * MiB))
    path = _ct_slice(tmp_path / "deflated.dcm", rows=2048, cols=2048, syntax=DeflatedExplicitVRLittleEndian,
                     pixel_data=bytes(2048 * 2048 * 2))
    assert path.stat().st_size < 100_000
    raised, seconds, peak = _measured(lambda: load_ct(path))
    assert isinstance(raised, LimitExceededError), raised
    assert "deflated.dcm: the deflated dataset, inflated is more than 4,194,304 bytes" in str(raised)
    assert seconds < 2.0, seconds
    assert peak < 8 * MiB, peak  # pydicom alone would inflate all 8 MB at once, then decode the frame


# --------------------------------------------------------------------------- text


def test_text_is_capped_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRILLIUM_LIMIT_TEXT_BYTES", "100")
    assert decode_text(b"Chest pain since morning.", "up.txt")[0] == "Chest pain since morning."
    with pytest.raises(NoteReadError, match=r"up.txt: 101 bytes, over the limit of 100 bytes for one note "
                                            r"\(TRILLIUM_LIMIT_TEXT_BYTES\)"):
        decode_text(b"a" * 101, "up.txt")
    (tmp_path / "n.txt").write_bytes(b"b" * 101)
    with pytest.raises(NoteReadError, match=r"n.txt: file is 101 bytes, over the limit of 100 bytes"):
        read_note(tmp_path / "n.txt")


def test_deidentification_skips_a_deflated_bomb_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trillium.medical.imaging.deid import deidentify_tree

    monkeypatch.setenv("TRILLIUM_LIMIT_MEMBER_BYTES", str(4 * MiB))
    src = tmp_path / "in"
    src.mkdir()
    _ct_slice(src / "deflated.dcm", rows=2048, cols=2048, syntax=DeflatedExplicitVRLittleEndian,
              pixel_data=bytes(2048 * 2048 * 2))
    report, peak = None, 0
    tracemalloc.start()
    try:
        report = deidentify_tree(src, tmp_path / "out", salt="a secret salt for the test")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.written == 0 and len(report.skipped) == 1
    assert "deflated.dcm: the deflated dataset, inflated is more than 4,194,304 bytes" in report.skipped[0][1]
    assert peak < 8 * MiB, peak
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
