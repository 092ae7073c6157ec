"""De-identify DICOM files with the PS3.15 Annex E Basic Application Level Confidentiality Profile.

Why this module exists: imaging files leave the hospital (for labelling, model training, a vendor's
bug report) only once nothing in them points back to a person. The Basic Profile of DICOM PS3.15
Annex E (Table E.1-1) says, attribute by attribute, what to do: remove it (``X``), empty it
(``Z``), replace it with a dummy (``D``) or replace a UID with a new one (``U``).
``BASIC_PROFILE_ACTIONS`` holds that table as data so that what happens to each attribute can be
read and tested rather than dug out of code.

Beyond the table, four rules cover what a fixed list of keywords cannot:

* every PN (person name) element anywhere is emptied, because any of them may name a person;
* every DA date, and the date part of every DT, is shifted by a per-patient number of days (the
  "Retain Longitudinal Temporal Information with Modified Dates" option), so intervals between a
  patient's studies survive, which follow-up and survival analyses need, while calendar dates
  (which identify people) do not;
* every UI element that is not a class UID from the standard (SOP class, transfer syntax, ...) is
  mapped to a ``2.25.`` UID derived from a salted hash, so all files of one series stay one series
  and references between instances keep matching, yet the original UIDs (which embed sites,
  devices and timestamps) cannot be recovered without the salt;
* private elements are removed, because vendors put anything (names, IDs, free text) there.

The salt is a secret the caller keeps: with it, pseudonyms can be recomputed from an original
Patient ID (to add a patient's later studies under the same pseudonym); without it, nobody can
test a guessed Patient ID against a pseudonym.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom import Dataset, FileMetaDataset
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID
from pydicom.valuerep import DA, DT

from trillium.core.errors import ConfigError, InputValidationError
from trillium.medical.imaging.dicom_io import check_deflated_size

__all__ = [
    "BASIC_PROFILE_ACTIONS",
    "DEIDENTIFICATION_METHOD",
    "DeidReport",
    "Deidentifier",
    "deidentify_tree",
]

DEIDENTIFICATION_METHOD = "trillium basic profile (PS3.15 E.1)"

#: Keyword -> action from PS3.15 Table E.1-1 (Basic Profile), applied at every nesting level.
#: ``X`` remove, ``Z`` replace with an empty value (kept only where it was present), ``D`` replace
#: with a dummy value (here: the salted pseudonym), ``U`` replace with a consistently mapped UID.
#: Where the standard offers a choice (``X/Z/D``, ``X/D``, ``Z/D``) the strictest one that keeps the
#: file valid is used: ``X`` for optional attributes, ``Z`` for the type 2 ones that must stay present.
#: Dates and times of acquisition/content are not listed: dates are shifted (Modified Dates option)
#: and times kept, see the module docstring. Attributes absent from this table are kept as they are,
#: except for the VR rules (PN emptied, DA/DT shifted, UI remapped) and private elements.
BASIC_PROFILE_ACTIONS: dict[str, str] = {
    # Patient identification: the pseudonym replaces name and ID; everything else goes.
    "PatientName": "D",
    "PatientID": "D",
    "IssuerOfPatientID": "X",
    "IssuerOfPatientIDQualifiersSequence": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "PatientBirthName": "X",
    "PatientMotherBirthName": "X",
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "PatientSex": "Z",
    "PatientSexNeutered": "X",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientAddress": "X",
    "PatientTelephoneNumbers": "X",
    "CountryOfResidence": "X",
    "RegionOfResidence": "X",
    "PatientInstitutionResidence": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "PatientReligiousPreference": "X",
    "PatientPrimaryLanguageCodeSequence": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "InsurancePlanIdentification": "X",
    "MedicalRecordLocator": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedPatientAliasSequence": "X",
    "ReferencedPatientPhotoSequence": "X",
    "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X",
    # Clinical free text about the patient.
    "AdditionalPatientHistory": "X",
    "PatientComments": "X",
    "PatientState": "X",
    "MedicalAlerts": "X",
    "Allergies": "X",
    "SmokingStatus": "X",
    "PregnancyStatus": "X",
    "LastMenstrualDate": "X",
    "SpecialNeeds": "X",
    "PatientTransportArrangements": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X",
    "DischargeDiagnosisDescription": "X",
    "AdmissionID": "X",
    "IssuerOfAdmissionIDSequence": "X",
    "ServiceEpisodeID": "X",
    "ServiceEpisodeDescription": "X",
    "CurrentPatientLocation": "X",
    "VisitComments": "X",
    # Institution, staff and equipment.
    "InstitutionName": "X",
    "InstitutionAddress": "X",
    "InstitutionCodeSequence": "X",
    "InstitutionalDepartmentName": "X",
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "OperatorsName": "X",
    "OperatorIdentificationSequence": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "RequestingPhysician": "X",
    "RequestingService": "X",
    "ContentCreatorName": "Z",
    "ContentCreatorIdentificationCodeSequence": "X",
    "PersonAddress": "X",
    "PersonTelephoneNumbers": "X",
    "VerifyingObserverName": "Z",
    "VerifyingOrganization": "X",
    "AuthorObserverSequence": "X",
    "HumanPerformerName": "X",
    "HumanPerformerOrganization": "X",
    "ActualHumanPerformersSequence": "X",
    "ScheduledHumanPerformersSequence": "X",
    "NamesOfIntendedRecipientsOfResults": "X",
    "IntendedRecipientsOfResultsIdentificationSequence": "X",
    "DistributionName": "X",
    "DistributionAddress": "X",
    "CustodialOrganizationSequence": "X",
    "StationName": "X",
    "DeviceSerialNumber": "X",
    "PerformedStationAETitle": "X",
    "PerformedStationName": "X",
    "PerformedStationNameCodeSequence": "X",
    "PerformedLocation": "X",
    "ScheduledStationAETitle": "X",
    "ScheduledStationName": "X",
    "ScheduledStationNameCodeSequence": "X",
    "ScheduledStudyLocation": "X",
    "ScheduledStudyLocationAETitle": "X",
    "ScheduledProcedureStepLocation": "X",
    "RequestedProcedureLocation": "X",
    # Orders, studies, series: identifiers and descriptions typed by people.
    "AccessionNumber": "Z",
    "StudyID": "Z",
    "StudyIDIssuer": "X",
    "StudyDescription": "X",
    "StudyComments": "X",
    "SeriesDescription": "X",
    "ProtocolName": "X",
    "ImageComments": "X",
    "FrameComments": "X",
    "DerivationDescription": "X",
    "AcquisitionComments": "X",
    "AcquisitionDeviceProcessingDescription": "X",
    "ContributionDescription": "X",
    "IdentifyingComments": "X",
    "TextComments": "X",
    "ReasonForStudy": "X",
    "ReasonForTheRequestedProcedure": "X",
    "RequestAttributesSequence": "X",
    "RequestedProcedureDescription": "X",
    "RequestedProcedureID": "X",
    "RequestedProcedureComments": "X",
    "RequestedContrastAgent": "X",
    "ReferencedStudySequence": "X",
    "ReferencedPerformedProcedureStepSequence": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X",
    "CommentsOnThePerformedProcedureStep": "X",
    "ScheduledProcedureStepID": "X",
    "ScheduledProcedureStepDescription": "X",
    "PlacerOrderNumberImagingServiceRequest": "Z",
    "FillerOrderNumberImagingServiceRequest": "Z",
    "OrderEnteredBy": "X",
    "OrderEntererLocation": "X",
    "OrderCallbackPhoneNumber": "X",
    "InterpretationText": "X",
    "InterpretationAuthor": "X",
    "InterpretationRecorder": "X",
    "InterpretationTranscriber": "X",
    "InterpretationDiagnosisDescription": "X",
    "InterpretationApproverSequence": "X",
    "ResultsComments": "X",
    "ResultsIDIssuer": "X",
    "ResultsDistributionListSequence": "X",
    "TopicAuthor": "X",
    "TopicKeywords": "X",
    "TopicSubject": "X",
    "TopicTitle": "X",
    # Copies of original values, signatures and thumbnails would undo everything above.
    "OriginalAttributesSequence": "X",
    "ModifiedAttributesSequence": "X",
    "EncryptedAttributesSequence": "X",
    "DigitalSignaturesSequence": "X",
    "MACParametersSequence": "X",
    "IconImageSequence": "X",
    "DataSetTrailingPadding": "X",
    "OverlayData": "X",
    "OverlayComments": "X",
    "CurveData": "X",
    # Instance UIDs (every other non-class UI element is remapped too, see ``_is_class_uid``).
    "StudyInstanceUID": "U",
    "SeriesInstanceUID": "U",
    "SOPInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U",
    "ReferencedFrameOfReferenceUID": "U",
    "RelatedFrameOfReferenceUID": "U",
    "InstanceCreatorUID": "U",
    "IrradiationEventUID": "U",
    "ConcatenationUID": "U",
    "DimensionOrganizationUID": "U",
    "DeviceUID": "U",
    "StorageMediaFileSetUID": "U",
    "MediaStorageSOPInstanceUID": "U",
    "UID": "U",
}

#: The Basic Profile code, and the Modified Dates option code because dates are shifted.
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)

_DA_RE = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")  # YYYYMMDD, or ACR-NEMA's YYYY.MM.DD
_DT_RE = re.compile(r"^(\d{8})(.*)$")  # date part, then time and offset (kept)


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_class_uid(keyword: str, value: str) -> bool:
    """True for UIDs that name a kind of thing (SOP class, transfer syntax, coding scheme, ...).

    Why: those are the same in every hospital and say nothing about a person; remapping them would
    make the file unreadable. Anything else in a UI element (study, series, instance, frame of
    reference, ...) is an instance UID and must be remapped.
    """
    if keyword.endswith(("ClassUID", "TransferSyntaxUID")):
        return True
    return value.startswith("1.2.840.10008.") or (UID(value).is_valid and value in UID_dictionary)


def _text_values(value: Any) -> list[str] | None:
    """A multi-valued (or single) element value as strings; None when it is empty."""
    if value is None or value == "":
        return None
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    if not items:
        return None
    out = []
    for item in items:
        if isinstance(item, dt.datetime) and not isinstance(item, DT):
            out.append(item.strftime("%Y%m%d%H%M%S.%f"))
        elif isinstance(item, dt.date) and not isinstance(item, DA | DT):
            out.append(item.strftime("%Y%m%d"))
        else:
            out.append(str(item))
    return out


class Deidentifier:
    """Applies the Basic Profile to one dataset at a time, with pseudonyms derived from ``salt``.

    Why a class: the salt and options are fixed for a whole export, so every file of every patient
    of that export gets consistent pseudonyms, date shifts and UIDs, and two exports with the same
    salt line up (a patient's later studies join the earlier ones).

    ``keep_private=True`` keeps vendor private elements (some pipelines need them); they are not
    checked for PHI, so the caller takes responsibility for them.
    """

    def __init__(self, *, salt: str, date_shift_range_days: int = 365, keep_private: bool = False) -> None:
        if not isinstance(salt, str) or not salt:
            raise ConfigError("Deidentifier needs a non-empty secret salt (str): without one, pseudonyms can be guessed")
        if isinstance(date_shift_range_days, bool) or not isinstance(date_shift_range_days, int) \
                or date_shift_range_days < 1:
            raise ConfigError(f"date_shift_range_days must be an int >= 1, got {date_shift_range_days!r}")
        self.salt = salt
        self.date_shift_range_days = date_shift_range_days
        self.keep_private = keep_private

    # -- the pseudonyms ------------------------------------------------------------------------

    def _patient_hash(self, patient_id: str) -> str:
        return _sha256_hex(self.salt + patient_id)

    def pseudonym_id(self, patient_id: str) -> str:
        """``ANON-<10 hex>``: the same original Patient ID always gives the same pseudonym."""
        return "ANON-" + self._patient_hash(patient_id)[:10]

    def pseudonym_name(self, patient_id: str) -> str:
        """``ANON^<8 hex>`` (family^given), derived from the Patient ID so one patient has one name."""
        return "ANON^" + self._patient_hash(patient_id)[:8]

    def date_offset_days(self, patient_id: str) -> int:
        """Days added to each date of this patient, in ±date_shift_range_days and never 0.

        Why per patient and deterministic: intervals between a patient's dates survive (even across
        separate runs with the same salt), while the offset itself cannot be derived without the
        salt. The hex digits used are not among those shown in the pseudonyms.
        """
        span = self.date_shift_range_days
        n = int(self._patient_hash(patient_id)[32:48], 16) % (2 * span)
        return n - span if n < span else n - span + 1

    def map_uid(self, uid: str) -> str:
        """A ``2.25.`` UID from the salted hash of ``uid``: same input, same output, in every file."""
        return "2.25." + str(int(_sha256_hex(self.salt + uid)[:32], 16))

    # -- the dataset ---------------------------------------------------------------------------

    def deidentify(self, ds: Dataset) -> Dataset:
        """Return a de-identified copy of ``ds`` (``ds`` itself is left untouched).

        Pixel data and geometry (positions, orientation, spacing, rescale, modality, SOP class)
        are kept unchanged: they are what the copy is for.
        """
        out = copy.deepcopy(ds)
        patient_id = str(ds.get("PatientID", "") or "")
        offset = dt.timedelta(days=self.date_offset_days(patient_id))
        if not self.keep_private:
            out.remove_private_tags()  # recursive (Dataset.walk)
        self._clean(out, top_patient_id=patient_id, offset=offset)

        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = DEIDENTIFICATION_METHOD
        codes = []
        for value, meaning in _METHOD_CODES:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            codes.append(item)
        out.DeidentificationMethodCodeSequence = codes
        out.LongitudinalTemporalInformationModified = "MODIFIED"

        meta = getattr(ds, "file_meta", None)
        if meta is not None and len(meta):
            out.file_meta = self._file_meta(meta, out)
        return out

    def _file_meta(self, meta: FileMetaDataset, out: Dataset) -> FileMetaDataset:
        """A fresh file meta group: only what the file needs, nothing from the sending station.

        Why rebuild rather than edit: the original group may carry the sender's AE title, a
        vendor implementation UID and private information, none of which the copy needs.
        """
        new = FileMetaDataset()
        sop_class = meta.get("MediaStorageSOPClassUID") or out.get("SOPClassUID")
        if sop_class:
            new.MediaStorageSOPClassUID = sop_class
        if "SOPInstanceUID" in out:
            new.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        elif meta.get("MediaStorageSOPInstanceUID"):
            new.MediaStorageSOPInstanceUID = self.map_uid(str(meta.MediaStorageSOPInstanceUID))
        if meta.get("TransferSyntaxUID"):
            new.TransferSyntaxUID = meta.TransferSyntaxUID
        new.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        new.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
        return new

    def _clean(self, ds: Dataset, *, top_patient_id: str, offset: dt.timedelta) -> None:
        """Apply the table and the VR rules to ``ds`` and, recursively, to every sequence item."""
        level_patient_id = str(ds.get("PatientID", "") or "") if "PatientID" in ds else top_patient_id
        for tag in list(ds.keys()):
            elem = ds[tag]
            keyword = elem.keyword or keyword_for_tag(tag)
            group = tag >> 16
            action = BASIC_PROFILE_ACTIONS.get(keyword)
            if 0x5000 <= group <= 0x50FF:  # retired curve groups (Curve Data, 50xx,xxxx: X)
                action = "X"
            if action == "X":
                del ds[tag]
                continue
            if action == "Z":
                elem.value = elem.empty_value
                continue
            if action == "D":
                self._dummy(elem, keyword, level_patient_id)
                continue
            self._apply_vr_rule(elem, keyword, top_patient_id=top_patient_id, offset=offset)

    def _dummy(self, elem: DataElement, keyword: str, level_patient_id: str) -> None:
        if keyword == "PatientID":
            elem.value = self.pseudonym_id(str(elem.value or ""))
        elif keyword == "PatientName":
            elem.value = self.pseudonym_name(level_patient_id)
        else:  # pragma: no cover - the table lists D for the two keywords above only
            elem.value = elem.empty_value

    def _apply_vr_rule(self, elem: DataElement, keyword: str, *, top_patient_id: str,
                       offset: dt.timedelta) -> None:
        vr = elem.VR
        if vr == "SQ":
            for item in elem.value or []:
                self._clean(item, top_patient_id=top_patient_id, offset=offset)
        elif vr == "PN":
            elem.value = elem.empty_value
        elif vr == "DA":
            self._map_values(elem, lambda v: _shift_da(v, offset))
        elif vr == "DT":
            self._map_values(elem, lambda v: _shift_dt(v, offset))
        elif vr == "UI":
            self._map_values(elem, lambda v: v if _is_class_uid(keyword, v) else self.map_uid(v))

    @staticmethod
    def _map_values(elem: DataElement, fn: Callable[[str], str]) -> None:
        """Replace each value of a (possibly multi-valued) element; empty it if any cannot be mapped.

        Why empty rather than keep: a value we cannot parse (a partial date, say) cannot be shifted,
        and keeping it unshifted would leak the real date.
        """
        values = _text_values(elem.value)
        if values is None:
            return
        try:
            mapped = [fn(v.strip().rstrip("\0")) for v in values]
        except ValueError:
            elem.value = elem.empty_value
            return
        elem.value = mapped[0] if len(mapped) == 1 else mapped


def _shift_da(value: str, offset: dt.timedelta) -> str:
    """Shift one DA value (or a ``from-to`` range); ValueError if it is not a full date."""
    if "-" in value:  # a date range, as found in query datasets
        return "-".join(_shift_da(part, offset) if part else "" for part in value.split("-"))
    m = _DA_RE.match(value)
    if not m:
        raise ValueError(f"not a DA date: {value!r}")
    try:
        day = dt.date(int(m[1]), int(m[2]), int(m[3])) + offset
    except OverflowError as exc:
        raise ValueError(str(exc)) from exc
    return day.strftime("%Y%m%d")


def _shift_dt(value: str, offset: dt.timedelta) -> str:
    """Shift the date part of one DT value, keeping its time and UTC offset."""
    m = _DT_RE.match(value)
    if not m:
        raise ValueError(f"DT without a full date: {value!r}")
    return _shift_da(m[1], offset) + m[2]


# -- folders -----------------------------------------------------------------------------------


@dataclass
class DeidReport:
    """What ``deidentify_tree`` did: files written, files skipped (path, reason), patients seen."""

    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    patients: int = 0


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def deidentify_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, salt: str,
                    keep_private: bool = False) -> DeidReport:
    """De-identify every DICOM file under ``src`` (a folder, walked recursively, or one file) into ``dst``.

    Output paths are ``<dst>/<new StudyInstanceUID>/<new SeriesInstanceUID>/<new SOPInstanceUID>.dcm``:
    source file and folder names often hold patient names or IDs, so none of them is reused.
    Files that are not DICOM are skipped and listed in the report, never copied, since they may
    hold PHI of their own (reports, scanned forms). DICOM files that do not describe one SOP
    instance (DICOMDIR), that burn annotations into their pixels (BurnedInAnnotation YES: the
    pixels may show a name) or that repeat an instance already written are skipped too, with why.
    """
    src_path = Path(src)
    if not src_path.exists():
        raise InputValidationError(f"de-identification source not found: {src_path}")
    dst_path = Path(dst)
    src_abs, dst_abs = src_path.resolve(), dst_path.resolve()
    if src_abs == dst_abs:  # de-identified files mixed among the originals would be easy to mistake
        raise InputValidationError(f"destination {dst_path} must differ from the source {src_path}")

    deid = Deidentifier(salt=salt, keep_private=keep_private)
    if src_path.is_file():
        files = [src_path]
    else:
        # List first, then write: output under src (dst inside src) is never read back as input.
        files = sorted(p for p in src_path.rglob("*") if p.is_file() and not _inside(p.resolve(), dst_abs))

    report = DeidReport()
    patients: set[str] = set()
    written: dict[Path, str] = {}
    for path in files:
        try:
            check_deflated_size(str(path), path)  # a deflated dataset is inflated in bounded steps first
            ds = pydicom.dcmread(path)
        except InputValidationError as exc:
            report.skipped.append((str(path), str(exc)))
            continue
        except InvalidDicomError:
            report.skipped.append((str(path), "not a DICOM file"))
            continue
        except Exception as exc:  # noqa: BLE001 - a damaged file must not stop the export
            report.skipped.append((str(path), f"unreadable DICOM file: {exc.__class__.__name__}"))
            continue
        missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not ds.get(k)]
        if missing:
            report.skipped.append((str(path), f"not a SOP instance (no {', '.join(missing)}; e.g. a DICOMDIR)"))
            continue
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            report.skipped.append((str(path), "BurnedInAnnotation is YES: the pixel data may show PHI"))
            continue
        out = deid.deidentify(ds)
        target = dst_path / str(out.StudyInstanceUID) / str(out.SeriesInstanceUID) / f"{out.SOPInstanceUID}.dcm"
        if target in written:
            report.skipped.append((str(path), f"same SOP instance as {written[target]}, already written"))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        out.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, target)  # no half-written .dcm if the run stops midway
        written[target] = str(path)
        patients.add(str(ds.get("PatientID", "") or ""))
        report.written += 1
    report.patients = len(patients)
    return report
