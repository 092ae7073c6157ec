"""DICOM de-identification (PS3.15 Basic Profile): no PHI survives, while what analysis needs does.

The fixtures are real CT files written by pydicom for two patients, full of PHI in the places
where hospitals put it (names, IDs, dates, institution, staff, a private block, a nested sequence).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.datadict import repeater_has_keyword, tag_for_keyword
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from trillium.core.errors import ConfigError, InputValidationError
from trillium.medical.imaging.deid import (
    BASIC_PROFILE_ACTIONS,
    DEIDENTIFICATION_METHOD,
    Deidentifier,
    DeidReport,
    deidentify_tree,
)

SALT = "test-salt-7f3a"
SLICES = 3
ORG_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root: instance UIDs that are surely not class UIDs

PATIENTS = {
    "P1": {
        "PatientName": "Doe^Johnathan",
        "PatientID": "MRN-0042-7731",
        "PatientBirthDate": "19610314",
        "StudyDate": "20230502",
        "NestedDate": "20230519",  # 17 days after the study
        "AccessionNumber": "ACC-99812",
        "StudyID": "STUDY-5521",
        "ReferringPhysicianName": "Houseman^Gregory",
        "PerformingPhysicianName": "Quinnell^Allison",
        "OperatorsName": "Techwright^Sam",
        "NestedPerson": "Witnessperson^Ruth",
        "PatientAddress": "12 Elmwood Lane, Springfield",
        "OtherPatientIDs": "OLD-ID-77123",
        "PrivateSecret": "secret-mrn-claim-8841",
    },
    "P2": {
        "PatientName": "Roe^Marianne",
        "PatientID": "MRN-0099-1205",
        "PatientBirthDate": "19790830",
        "StudyDate": "20240111",
        "NestedDate": "20240229",  # 49 days after the study (across a leap day)
        "AccessionNumber": "ACC-10447",
        "StudyID": "STUDY-8093",
        "ReferringPhysicianName": "Kildare^Jameson",
        "PerformingPhysicianName": "Crane^Frasier",
        "OperatorsName": "Scanmore^Pat",
        "NestedPerson": "Observerly^Tom",
        "PatientAddress": "7 Harbour Road, Shelbyville",
        "OtherPatientIDs": "OLD-ID-55410",
        "PrivateSecret": "secret-mrn-claim-3307",
    },
}
INSTITUTION = "St. Elsewhere General Hospital"
INSTITUTION_ADDRESS = "1 Hospital Plaza, Boston"
STATION = "CTROOM-4B-SCAN"


def _uid(*parts: object) -> str:
    """Deterministic source UIDs, so that every run of these tests sees the same bytes."""
    return generate_uid(prefix=ORG_ROOT, entropy_srcs=[str(p) for p in parts])


def _pixels(patient: str, index: int) -> np.ndarray:
    rng = np.random.default_rng([int(patient[1:]), index])
    return rng.integers(-1024, 2000, size=(8, 8), dtype=np.int16)


def _ct_slice(key: str, index: int, study_uid: str, series_uid: str, frame_uid: str,
              previous_sop: str | None) -> Dataset:
    """One CT slice full of PHI, as a scanner and a PACS would have left it."""
    phi = PATIENTS[key]
    sop_uid = _uid(key, "sop", index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "ELSEWHERE_PACS"

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "CT"
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyID",
               "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "PatientAddress",
               "OtherPatientIDs"):
        setattr(ds, kw, phi[kw])
    ds.PatientSex = "M" if key == "P1" else "F"
    ds.PatientAge = "062Y"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = phi["StudyDate"]
    ds.StudyTime = "101500"
    ds.AcquisitionDateTime = phi["StudyDate"] + "101512.250000"
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.StationName = STATION
    ds.DeviceSerialNumber = "SN-44817"
    ds.StudyDescription = f"CT chest for {phi['PatientName']}"
    ds.SeriesDescription = "AXIAL 1mm"
    ds.ImageComments = f"patient {phi['PatientID']} moved"
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = phi["OtherPatientIDs"]

    # A nested sequence with a PN not in the profile table and a date one must shift.
    item = Dataset()
    item.Manufacturer = "ACME"
    item.ContributionDateTime = phi["NestedDate"] + "090000"
    item.InstanceCreationDate = phi["NestedDate"]
    item.PersonName = phi["NestedPerson"]
    ds.ContributingEquipmentSequence = Sequence([item])
    if previous_sop:  # an instance reference that must keep matching after remapping
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = previous_sop
        ds.ReferencedImageSequence = Sequence([ref])

    block = ds.private_block(0x0011, "ACME", create=True)
    block.add_new(0x01, "LO", phi["PrivateSecret"])

    pixels = _pixels(key, index)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.25
    ds.ImagePositionPatient = [-120.0, -95.5, -50.0 + 1.25 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.RescaleSlope = 1
    ds.RescaleIntercept = -1024
    ds.InstanceNumber = index + 1
    ds.PixelData = pixels.tobytes()
    return ds


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """Two patients, SLICES slices each, in folders named after the patient (as exports often are)."""
    root = tmp_path / "src"
    for key, phi in PATIENTS.items():
        study, series, frame = (_uid(key, kind) for kind in ("study", "series", "frame"))
        folder = root / phi["PatientName"].replace("^", "_") / phi["AccessionNumber"]
        folder.mkdir(parents=True)
        previous = None
        for i in range(SLICES):
            ds = _ct_slice(key, i, study, series, frame, previous)
            ds.save_as(folder / f"{phi['PatientID']}_{i:03d}", enforce_file_format=True)
            previous = ds.SOPInstanceUID
    (root / "Doe_Johnathan" / "report_MRN-0042-7731.txt").write_text("Doe, Johnathan: nodule 6 mm\n")
    return root


def _read_tree(folder: Path) -> dict[Path, Dataset]:
    return {p: pydicom.dcmread(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _originals(src: Path) -> list[Dataset]:
    out = []
    for p in sorted(src.rglob("*")):
        if p.is_file():
            try:
                out.append(pydicom.dcmread(p))
            except pydicom.errors.InvalidDicomError:
                pass
    return out


def _phi_strings(originals: list[Dataset]) -> set[str]:
    """Every identifying string the sources hold: values, original UIDs and original dates."""
    phi: set[str] = {INSTITUTION, INSTITUTION_ADDRESS, STATION, "SN-44817", "ELSEWHERE_PACS"}
    for values in PATIENTS.values():
        for key, value in values.items():
            phi.add(value)
            if key in ("PatientName", "NestedPerson", "ReferringPhysicianName", "PerformingPhysicianName",
                       "OperatorsName"):
                phi.update(part for part in value.split("^") if len(part) > 3)
    for ds in originals:
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            phi.add(str(ds[kw].value))
    return phi


def _all_text(ds: Dataset) -> list[str]:
    """String forms of every value at every nesting level, file meta included (pixel data aside)."""
    texts = []
    for elem in list(ds.file_meta.iterall()) + list(ds.iterall()):
        if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or elem.VR == "SQ":
            continue
        texts.append(str(elem.value))
    return texts


def test_no_phi_remains_in_values_or_paths(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    report = deidentify_tree(src, dst, salt=SALT)
    assert isinstance(report, DeidReport)
    assert report.written == 2 * SLICES and report.patients == 2

    phi = _phi_strings(_originals(src))
    out = _read_tree(dst)
    assert len(out) == 2 * SLICES
    for path, ds in out.items():
        rel = str(path.relative_to(dst))
        for s in phi:
            assert s not in rel, f"{s!r} in output path {rel}"
        texts = _all_text(ds)
        for text in texts:
            for s in phi:
                assert s not in text, f"{s!r} survives in {path.name}: {text!r}"
        # The birth dates are gone; person names anywhere are empty or the pseudonym.
        assert ds.PatientBirthDate == ""
        for elem in ds.iterall():
            if elem.VR == "PN" and elem.keyword != "PatientName":
                assert not elem.value, elem
        assert str(ds.PatientName).startswith("ANON^") and ds.PatientID.startswith("ANON-")
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod == DEIDENTIFICATION_METHOD
        codes = {(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence}
        assert ("113100", "DCM") in codes
        assert ds.AccessionNumber == "" and ds.StudyID == "" and ds.PatientSex == ""
        for kw in ("PatientAge", "InstitutionName", "OtherPatientIDs", "OtherPatientIDsSequence",
                   "StudyDescription", "SeriesDescription", "ImageComments", "StationName"):
            assert kw not in ds, kw
        assert "SourceApplicationEntityTitle" not in ds.file_meta


def test_phi_scan_finds_phi_where_it_is(src: Path) -> None:
    """The scan above proves something only if it flags PHI that is there: check it on the sources."""
    originals = _originals(src)
    phi = _phi_strings(originals)
    texts = [t for ds in originals for t in _all_text(ds)]
    found = {s for s in phi if any(s in t for t in texts)}
    assert found == phi, phi - found


def test_pseudonyms_are_per_patient_and_salted(src: Path, tmp_path: Path) -> None:
    deidentify_tree(src, tmp_path / "out", salt=SALT)
    by_name: dict[str, set[str]] = {}
    for ds in _read_tree(tmp_path / "out").values():
        by_name.setdefault(ds.PatientID, set()).add(str(ds.PatientName))
    assert len(by_name) == 2 and all(len(names) == 1 for names in by_name.values())
    expected = {"ANON-" + hashlib.sha256((SALT + p["PatientID"]).encode()).hexdigest()[:10] for p in PATIENTS.values()}
    assert set(by_name) == expected


def test_dates_shift_consistently_within_a_patient(src: Path, tmp_path: Path) -> None:
    deidentify_tree(src, tmp_path / "out", salt=SALT)
    originals = {str(ds.PatientID): ds for ds in _originals(src)}
    deid = Deidentifier(salt=SALT)
    day = dt.timedelta(days=1)

    def parse(s: str) -> dt.date:
        return dt.datetime.strptime(s[:8], "%Y%m%d").date()

    for ds in _read_tree(tmp_path / "out").values():
        orig = next(o for pid, o in originals.items() if deid.pseudonym_id(pid) == ds.PatientID)
        shift = parse(ds.StudyDate) - parse(orig.StudyDate)
        assert shift != dt.timedelta(0) and abs(shift) <= 365 * day
        assert shift == dt.timedelta(days=deid.date_offset_days(str(orig.PatientID)))
        for kw in ("SeriesDate", "ContentDate", "AcquisitionDate", "AcquisitionDateTime"):
            assert parse(ds[kw].value) - parse(orig[kw].value) == shift, kw
        assert ds.AcquisitionDateTime[8:] == orig.AcquisitionDateTime[8:]  # the time is kept
        assert ds.StudyTime == orig.StudyTime
        nested, nested_orig = ds.ContributingEquipmentSequence[0], orig.ContributingEquipmentSequence[0]
        assert parse(nested.InstanceCreationDate) - parse(ds.StudyDate) == \
            parse(nested_orig.InstanceCreationDate) - parse(orig.StudyDate)  # interval preserved
        assert parse(nested.ContributionDateTime) - parse(nested_orig.ContributionDateTime) == shift
        assert nested.Manufacturer == "ACME"


def test_date_offset_is_never_zero_and_in_range() -> None:
    deid = Deidentifier(salt=SALT, date_shift_range_days=3)
    offsets = {deid.date_offset_days(f"patient-{i}") for i in range(400)}
    assert offsets == {-3, -2, -1, 1, 2, 3}


def test_uids_are_remapped_consistently(src: Path, tmp_path: Path) -> None:
    originals = _originals(src)
    deidentify_tree(src, tmp_path / "a", salt=SALT)
    deidentify_tree(src, tmp_path / "b", salt=SALT)
    deidentify_tree(src, tmp_path / "c", salt="another-salt")
    a, b, c = (list(_read_tree(tmp_path / x).values()) for x in "abc")

    def uids(datasets: list[Dataset]) -> set[str]:
        return {str(ds[kw].value) for ds in datasets
                for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")}

    assert uids(a) == uids(b)
    assert not uids(a) & uids(c)
    assert not uids(a) & uids(originals)
    assert len({ds.SeriesInstanceUID for ds in a}) == 2  # each patient's slices still form one series
    assert len({ds.StudyInstanceUID for ds in a}) == 2
    sops = {ds.SOPInstanceUID for ds in a}
    for ds in a:
        assert ds.SOPInstanceUID.startswith("2.25.") and len(ds.SOPInstanceUID) <= 64
        assert pydicom.uid.UID(ds.SOPInstanceUID).is_valid
        assert ds.SOPClassUID == CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        if "ReferencedImageSequence" in ds:  # references still point at a written instance
            ref = ds.ReferencedImageSequence[0]
            assert ref.ReferencedSOPInstanceUID in sops and ref.ReferencedSOPClassUID == CTImageStorage
    assert sum("ReferencedImageSequence" in ds for ds in a) == 2 * (SLICES - 1)


def test_pixels_and_geometry_unchanged(src: Path, tmp_path: Path) -> None:
    deidentify_tree(src, tmp_path / "out", salt=SALT)
    deid = Deidentifier(salt=SALT)
    originals = {deid.map_uid(str(ds.SOPInstanceUID)): ds for ds in _originals(src)}
    out = list(_read_tree(tmp_path / "out").values())
    assert len(out) == len(originals)
    for ds in out:
        orig = originals[ds.SOPInstanceUID]
        assert ds.PixelData == orig.PixelData
        assert np.array_equal(ds.pixel_array, orig.pixel_array)
        for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows",
                   "Columns", "RescaleSlope", "RescaleIntercept", "Modality", "SOPClassUID", "InstanceNumber"):
            assert ds[kw].value == orig[kw].value, kw


def test_private_tags_removed_and_non_dicom_skipped(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    report = deidentify_tree(src, dst, salt=SALT)
    for ds in _read_tree(dst).values():
        assert not any(elem.tag.is_private for elem in ds.iterall())
    assert len(report.skipped) == 1
    path, reason = report.skipped[0]
    assert path.endswith("report_MRN-0042-7731.txt") and "not a DICOM" in reason
    assert all(p.suffix == ".dcm" for p in dst.rglob("*") if p.is_file())
    assert not any("nodule" in p.read_bytes().decode("latin-1") for p in dst.rglob("*") if p.is_file())


def test_keep_private_keeps_private_block(src: Path, tmp_path: Path) -> None:
    deidentify_tree(src, tmp_path / "out", salt=SALT, keep_private=True)
    for ds in _read_tree(tmp_path / "out").values():
        assert ds.private_block(0x0011, "ACME")[0x01].value.startswith("secret-")


def test_deidentify_leaves_input_untouched(src: Path) -> None:
    ds = _originals(src)[0]
    before = ds.to_json_dict()
    meta_before = ds.file_meta.to_json_dict()
    out = Deidentifier(salt=SALT).deidentify(ds)
    assert ds.to_json_dict() == before and ds.file_meta.to_json_dict() == meta_before
    assert out.SOPInstanceUID != ds.SOPInstanceUID and out.PatientName != ds.PatientName


def test_single_file_and_dst_inside_src(src: Path, tmp_path: Path) -> None:
    one = next(p for p in sorted(src.rglob("*")) if p.is_file() and p.suffix != ".txt")
    report = deidentify_tree(one, tmp_path / "single", salt=SALT)
    assert report.written == 1 and report.patients == 1 and report.skipped == []
    assert len(list((tmp_path / "single").rglob("*.dcm"))) == 1

    inner = src / "deid-out"  # output under the source is not read back as input
    report = deidentify_tree(src, inner, salt=SALT)
    assert report.written == 2 * SLICES
    again = deidentify_tree(src, inner, salt=SALT)
    assert again.written == 2 * SLICES and len(again.skipped) == 1


def test_burned_in_annotation_is_skipped(src: Path, tmp_path: Path) -> None:
    one = next(p for p in sorted(src.rglob("*")) if p.is_file() and p.suffix != ".txt")
    ds = pydicom.dcmread(one)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(one, enforce_file_format=True)
    report = deidentify_tree(src, tmp_path / "out", salt=SALT)
    assert report.written == 2 * SLICES - 1
    assert any(p == str(one) and "BurnedInAnnotation" in r for p, r in report.skipped)


def test_missing_src_raises_with_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(InputValidationError, match="no-such-folder"):
        deidentify_tree(missing, tmp_path / "out", salt=SALT)


def test_profile_table_uses_known_keywords_and_actions() -> None:
    assert set(BASIC_PROFILE_ACTIONS.values()) <= {"D", "Z", "X", "U"}
    for keyword in BASIC_PROFILE_ACTIONS:
        assert tag_for_keyword(keyword) is not None or repeater_has_keyword(keyword), keyword
    for kw, action in {"PatientName": "D", "PatientID": "D", "PatientBirthDate": "Z", "PatientSex": "Z",
                       "PatientAge": "X", "AccessionNumber": "Z", "StudyID": "Z", "InstitutionName": "X",
                       "OtherPatientIDsSequence": "X", "IssuerOfPatientID": "X", "StudyInstanceUID": "U"}.items():
        assert BASIC_PROFILE_ACTIONS[kw] == action, kw


def test_salt_is_required() -> None:
    with pytest.raises(ConfigError, match="non-empty secret salt"):
        Deidentifier(salt="")
    with pytest.raises(ConfigError, match=r"date_shift_range_days must be an int >= 1, got 0"):
        Deidentifier(salt=SALT, date_shift_range_days=0)


def test_unshiftable_dates_are_emptied_and_overlays_removed() -> None:
    """A date that cannot be shifted must not leak unshifted; overlays and curves may draw PHI."""
    deid = Deidentifier(salt=SALT)
    ds = Dataset()
    ds.PatientID = "X1"
    ds.AcquisitionDateTime = "2020"  # year only: no day to shift
    ds.add_new(0x00080023, "DA", ["20200101", "20200105"])  # multi-valued ContentDate
    ds.add_new(0x60003000, "OW", b"\0\0")  # OverlayData
    ds.add_new(0x50000010, "US", 1)  # a retired curve group
    ds.ReferencedSOPClassUID = CTImageStorage
    out = deid.deidentify(ds)
    shift = dt.timedelta(days=deid.date_offset_days("X1"))
    assert out.AcquisitionDateTime == ""
    assert list(out.ContentDate) == [(dt.date(2020, 1, d) + shift).strftime("%Y%m%d") for d in (1, 5)]
    assert 0x60003000 not in out and 0x50000010 not in out
    assert out.ReferencedSOPClassUID == CTImageStorage
