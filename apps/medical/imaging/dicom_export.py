"""Chest-CT nodule findings out as DICOM objects that PACS, viewers and other tools read.

Why DICOM and not our JSON: a finding is only useful downstream if the reading room's viewer
can show it on the scanner's own images and a registry can parse it without our code. So each
analysis becomes two standard objects in the CT's study:

* a **Segmentation** (SEG, BINARY), one segment per finding, whose frames point back to the
  exact CT slices they were drawn on (``ReferencedSOPInstanceUID``), so a viewer overlays the
  mask on the right image without trusting positions alone;
* a **Comprehensive 3D SR** measurement report (TID 1500) with one measurement group per
  finding: the centre as an SCOORD3D POINT in the CT's frame of reference, the longest
  diameter, the volume, the model's malignancy probability (and its standard deviation), the
  detection probability, the attenuation type and the Lung-RADS-style category.

The SEG segment and the SR group of one finding carry the same Tracking Identifier
("Nodule <id>") and Tracking UID, which is how DICOM says "these describe the same lesion".
The UID is derived from the CT series, the finding id and its centre, so ``write_seg`` and
``write_sr`` called separately still agree, and re-exporting the same analysis gives the same
UIDs for the same lesions.

highdicom builds the objects (it knows the IODs' modules, the TID 1500 tree and the SEG's
per-frame references, and checks much of them); it is an optional extra, imported lazily, so
the rest of trillium works without it. Missing it is a ``ConfigError`` naming the extra.

Coded concepts. Standard codes are used wherever one exists (SNOMED CT for nodule, lung,
diameter, volume, standard deviation; DCM for tracking and geometry; UCUM for units). Where
none fits, a private coding scheme ``99TRILLIUM`` (the "99" prefix DICOM reserves for private schemes) is used
and declared in the SR's Coding Scheme Identification Sequence so a reader can tell whose
codes they are:

* ``MALIG-PROB`` "Malignancy probability (model)": there is no standard concept for a model's
  probability of malignancy of a lung nodule. The nearest, DCM 111047 "Probability of cancer",
  is defined as a CAD operating-point axis label (CID 6048), not a per-finding result, so
  reusing it would assert something else. Swap it in via :data:`MALIGNANCY_PROBABILITY` if a
  consumer asks for it.
* ``NODULE-PROB`` "Nodule probability (model)": the detector's score, likewise uncoded.
* ``NODULE-TYPE`` with values ``SOLID`` / ``PART-SOLID`` / ``GROUND-GLASS``: the DICOM context
  groups (pydicom's code dictionary) hold no value set for the three Lung-RADS attenuation
  classes.
* ``LUNG-RADS`` with values ``LUNG-RADS-2`` ... ``LUNG-RADS-4B`` and ``LUNG-RADS-4X`` (a solid or
  part-solid mass above 30 mm): no Lung-RADS codes there either, and ours is a size-and-type rule
  (``measure.finding_category``), not a radiologist's assessment, so the meaning says
  "size-based".

The uncertainty of the malignancy probability is a second measurement with the same concept
name and the standard derivation modifier SCT 386136009 "Standard Deviation" (CID 7464), the
way TID 300 qualifies a value, so a reader that knows the concept finds both.

The SR is written PRELIMINARY / UNVERIFIED: it is unreviewed machine output.
"""

from __future__ import annotations

import io
import logging
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import SegmentationStorage, generate_uid

from trillium.core import __version__ as TRILLIUM_VERSION
from trillium.core.errors import ConfigError, InputValidationError

log = logging.getLogger(__name__)

ALGORITHM_NAME = "trillium nodule analysis"
ALGORITHM_VERSION = TRILLIUM_VERSION
MANUFACTURER = "Trillium"
#: Enhanced General Equipment needs a serial number (type 1); software has none, so a fixed token.
DEVICE_SERIAL = "trillium-software"
#: The device observer UID must be stable for one device; derived from the algorithm name.
DEVICE_OBSERVER_UID = generate_uid(entropy_srcs=["trillium", ALGORITHM_NAME])

SEG_SERIES_NUMBER = 900
SEG_SERIES_DESCRIPTION = "Trillium nodule segmentation"
SR_SERIES_NUMBER = 901
SR_SERIES_DESCRIPTION = "Trillium nodule report"

INSTALL_HINT = 'pip install "trillium[dicom-export]" (or: pip install highdicom)'

PRIVATE_SCHEME = "99TRILLIUM"
PRIVATE_SCHEME_NAME = "Trillium nodule analysis private codes"

MALIGNANCY_PROBABILITY = Code("MALIG-PROB", PRIVATE_SCHEME, "Malignancy probability (model)")
NODULE_PROBABILITY = Code("NODULE-PROB", PRIVATE_SCHEME, "Nodule probability (model)")
NODULE_TYPE = Code("NODULE-TYPE", PRIVATE_SCHEME, "Nodule attenuation type")
NODULE_TYPES = {
    "solid": Code("SOLID", PRIVATE_SCHEME, "Solid"),
    "part-solid": Code("PART-SOLID", PRIVATE_SCHEME, "Part-solid"),
    "ground-glass": Code("GROUND-GLASS", PRIVATE_SCHEME, "Ground-glass"),
}
LUNG_RADS = Code("LUNG-RADS", PRIVATE_SCHEME, "Lung-RADS category (size-based)")
LUNG_RADS_CATEGORIES = {c: Code(f"LUNG-RADS-{c}", PRIVATE_SCHEME, f"Lung-RADS {c}") for c in ("2", "3", "4A", "4B", "4X")}
#: UCUM annotation for a probability: dimensionless ("1") but says what the number is.
PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")
#: Report language, as highdicom's MeasurementReport writes it.
LANGUAGE = Code("en-US", "RFC5646", "English (United States)")
#: TID 1500 row for report-level qualitative statements (used for "no nodule found").
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
#: LOINC Radiology Playbook procedure, for TID 1500 "Procedure reported" (CID 100 is extensible).
PROCEDURE_CT_CHEST = Code("24627-2", "LN", "CT Chest")

#: Type 2 patient/study attributes highdicom copies from the first source image (absent ones
#: raise there); an export of a series that lacks them writes them empty, as type 2 allows.
_TYPE2_DEFAULTS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                   "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
_REQUIRED_KEYS = ("id", "center_mm", "diameter_mm", "volume_mm3", "malignancy", "type", "category")


# --------------------------------------------------------------------------- helpers

def _highdicom() -> Any:
    """Import highdicom on first use, so trillium does not need it unless exporting."""
    try:
        import highdicom
    except ImportError as exc:
        raise ConfigError(f"DICOM SEG/SR export needs highdicom, which is not installed: {INSTALL_HINT}") from exc
    return highdicom


def _codes() -> Any:
    from pydicom.sr.codedict import codes
    return codes


def _header(ds: Dataset) -> Dataset:
    """A pixel-free copy of ``ds`` with empty type 2 patient/study attributes filled in.

    Copying keeps the caller's datasets untouched, and dropping pixel data keeps a 500-slice
    series' evidence list from holding every image in memory twice.
    """
    out = Dataset()
    for elem in ds:
        if elem.tag.group != 0x7FE0:
            out.add(elem)
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    for keyword in _TYPE2_DEFAULTS:
        if keyword not in out:
            setattr(out, keyword, "")
    return out


def _check_sources(source_datasets: Sequence[Dataset], what: str) -> None:
    if not source_datasets:
        raise InputValidationError(f"{what}: no source CT datasets given")
    first = source_datasets[0]
    for n, ds in enumerate(source_datasets):
        for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not str(ds.get(keyword, "")):
                raise InputValidationError(f"{what}: source dataset {n} lacks {keyword}")
        if ds.StudyInstanceUID != first.StudyInstanceUID or ds.SeriesInstanceUID != first.SeriesInstanceUID:
            raise InputValidationError(f"{what}: source dataset {n} ({ds.SOPInstanceUID}) is from another series "
                                       f"than dataset 0 ({first.SeriesInstanceUID}); export one CT series at a time")
    if not str(first.get("FrameOfReferenceUID", "")):
        raise InputValidationError(f"{what}: source CT lacks FrameOfReferenceUID (0020,0052); positions in the "
                                   "report would have no frame of reference")


def _check_findings(findings: Sequence[Mapping[str, Any]], what: str, keys: Sequence[str] = _REQUIRED_KEYS) -> None:
    """Names the finding and the key at fault; ``keys`` is what the caller's object needs."""
    seen: set[int] = set()
    for n, f in enumerate(findings):
        missing = [k for k in keys if k not in f]
        if missing:
            raise InputValidationError(f"{what}: finding {n} (id {f.get('id', '?')}) lacks {', '.join(missing)}")
        fid = int(f["id"])
        if fid in seen:
            raise InputValidationError(f"{what}: finding id {fid} appears twice; ids name segments and tracking ids")
        seen.add(fid)
        center = np.asarray(f["center_mm"], dtype=float)
        if center.shape != (3,) or not np.all(np.isfinite(center)):
            raise InputValidationError(f"{what}: finding id {fid} center_mm must be 3 finite numbers, got {f['center_mm']!r}")
        if "type" not in keys:
            continue
        if str(f["type"]) not in NODULE_TYPES:
            raise InputValidationError(f"{what}: finding id {fid} type {f['type']!r} is not one of {sorted(NODULE_TYPES)}")
        if str(f["category"]) not in LUNG_RADS_CATEGORIES:
            raise InputValidationError(f"{what}: finding id {fid} category {f['category']!r} is not one of "
                                       f"{sorted(LUNG_RADS_CATEGORIES)}")


def tracking_uid(series_uid: str, finding: Mapping[str, Any]) -> str:
    """The finding's Tracking UID: the same for SEG and SR and across re-exports of one analysis.

    The centre (to 0.1 mm) is part of it so that finding "1" of a later analysis, which may be
    a different lesion, does not get the UID of this one.
    """
    center = ",".join(f"{float(v):.1f}" for v in finding["center_mm"])
    return str(generate_uid(entropy_srcs=["trillium-nodule", str(series_uid), str(int(finding["id"])), center]))


def _label(finding: Mapping[str, Any]) -> str:
    return f"Nodule {int(finding['id'])}"


# --------------------------------------------------------------------------- SEG

def write_seg(
    source_datasets: list[Dataset],
    masks: list[np.ndarray],
    findings: list[dict],
    out_path: str | os.PathLike[str],
) -> Path:
    """Write a BINARY DICOM Segmentation with one segment per finding; returns the path.

    ``source_datasets`` are the CT slices in the volume's slice order (headers suffice) and
    ``masks[n]`` is finding ``n``'s bool mask ``[k, j, i]`` on that grid, so ``masks[n][k]``
    belongs to ``source_datasets[k]``. Only slices some mask touches are encoded, and empty
    frames are omitted: a nodule spans a handful of slices, and a full-series frame stack
    per finding would cost hundreds of MB for nothing.
    """
    hd = _highdicom()
    codes = _codes()
    what = "write_seg"
    _check_sources(source_datasets, what)
    _check_findings(findings, what, keys=("id", "center_mm"))
    if not findings:
        raise InputValidationError(f"{what}: no findings; a Segmentation needs at least one segment "
                                   "(export_findings writes only the SR in that case)")
    if len(masks) != len(findings):
        raise InputValidationError(f"{what}: {len(masks)} masks for {len(findings)} findings; need one each")
    first = source_datasets[0]
    shape = (len(source_datasets), int(first.Rows), int(first.Columns))
    union = np.zeros(shape[0], dtype=bool)
    for f, m in zip(findings, masks, strict=True):
        m = np.asarray(m)
        if m.shape != shape:
            raise InputValidationError(f"{what}: mask of finding id {f['id']} has shape {m.shape}, the CT grid is "
                                       f"{shape} (slices, rows, columns)")
        if not m.any():
            raise InputValidationError(f"{what}: mask of finding id {f['id']} is empty; a segment needs voxels")
        union |= np.asarray(m, dtype=bool).any(axis=(1, 2))
    ks = np.flatnonzero(union)
    k0, k1 = int(ks[0]), int(ks[-1]) + 1

    stacked = np.zeros((k1 - k0, shape[1], shape[2], len(masks)), dtype=np.uint8)
    for n, m in enumerate(masks):
        stacked[..., n] = np.asarray(m, dtype=bool)[k0:k1]
    # Positions of the kept slices, from the CT itself: highdicom matches each frame to the
    # source image at that position and records it as the frame's ReferencedSOPInstanceUID.
    positions = [hd.PlanePositionSequence(coordinate_system=hd.CoordinateSystemNames.PATIENT,
                                          image_position=[float(v) for v in ds.ImagePositionPatient])
                 for ds in source_datasets[k0:k1]]

    algorithm = hd.AlgorithmIdentificationSequence(name=ALGORITHM_NAME, version=ALGORITHM_VERSION,
                                                   family=codes.cid7162.ArtificialIntelligence)
    series_uid = str(first.SeriesInstanceUID)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n + 1,
            segment_label=_label(f),
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=tracking_uid(series_uid, f),
            tracking_id=_label(f),
            anatomic_regions=[codes.SCT.Lung],
        )
        for n, f in enumerate(findings)
    ]
    headers = [_header(ds) for ds in source_datasets]
    seg = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=stacked,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=f"trillium {TRILLIUM_VERSION}; highdicom {hd.__version__}",
        device_serial_number=DEVICE_SERIAL,
        content_label="NODULES",
        content_description=SEG_SERIES_DESCRIPTION,
        plane_positions=positions,
        omit_empty_frames=True,
    )
    seg.SeriesDescription = SEG_SERIES_DESCRIPTION
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    log.info("wrote SEG %s: %d segments, %d frames", out, len(findings), int(seg.NumberOfFrames))
    return out


# --------------------------------------------------------------------------- SR

def _finite(finding: Mapping[str, Any], key: str) -> float | None:
    value = finding.get(key)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _measurement_group(hd: Any, codes: Any, finding: Mapping[str, Any], series_uid: str, for_uid: str,
                       algorithm: Any) -> Any:
    sr = hd.sr
    fid = int(finding["id"])
    mm, mm3 = codes.UCUM.Millimeter, codes.UCUM.CubicMillimeter
    measurements = []
    for key, name, unit, derivation in (
        ("diameter_mm", codes.SCT.Diameter, mm, codes.SCT.Maximum),  # the longest diameter
        ("volume_mm3", codes.SCT.Volume, mm3, None),
        ("malignancy", MALIGNANCY_PROBABILITY, PROBABILITY_UNIT, None),
        ("malignancy_std", MALIGNANCY_PROBABILITY, PROBABILITY_UNIT, codes.SCT.StandardDeviation),
        ("nodule_probability", NODULE_PROBABILITY, PROBABILITY_UNIT, None),
    ):
        value = _finite(finding, key)
        if value is None:
            if key in _REQUIRED_KEYS:
                raise InputValidationError(f"write_sr: finding id {fid} {key} is not a finite number: {finding[key]!r}")
            continue  # optional measurement absent or NaN: say nothing rather than a fake value
        if unit is PROBABILITY_UNIT and not 0.0 <= value <= 1.0:
            raise InputValidationError(f"write_sr: finding id {fid} {key} is {value}, not a probability in [0, 1]")
        measurements.append(sr.Measurement(name=name, value=value, unit=unit, derivation=derivation))
    evaluations = [
        sr.QualitativeEvaluation(name=NODULE_TYPE, value=NODULE_TYPES[str(finding["type"])]),
        sr.QualitativeEvaluation(name=LUNG_RADS, value=LUNG_RADS_CATEGORIES[str(finding["category"])]),
    ]
    center = np.asarray(finding["center_mm"], dtype=float).reshape(1, 3)
    return sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=sr.TrackingIdentifier(uid=tracking_uid(series_uid, finding), identifier=_label(finding)),
        referenced_region=sr.ImageRegion3D(graphic_type=sr.GraphicTypeValues3D.POINT, graphic_data=center,
                                           frame_of_reference_uid=for_uid),
        geometric_purpose=codes.DCM.Center,
        finding_type=codes.SCT.Nodule,
        finding_category=codes.SCT.MorphologicallyAbnormalStructure,
        finding_sites=[sr.FindingSite(anatomic_location=codes.SCT.Lung)],
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _empty_report(hd: Any, codes: Any, context: Any) -> Dataset:
    """TID 1500 root for "analysed, no nodule found".

    highdicom's ``MeasurementReport`` insists on at least one measurement group, and TID 1500
    wants one of its Imaging Measurements / Derived Imaging Measurements / Qualitative
    Evaluations containers with content. So the same header items are built here, followed by
    a Qualitative Evaluations container holding "Nodule: Absent" (SCT 27925004 = SCT 272519000),
    asserted by the device observer, i.e. the algorithm, not a radiologist.
    """
    sr = hd.sr
    root = sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    root.ContentSequence = sr.ContentSequence()
    root.ContentSequence.extend(sr.LanguageOfContentItemAndDescendants(LANGUAGE))
    root.ContentSequence.extend(context)
    root.ContentSequence.append(sr.CodeContentItem(name=codes.DCM.ProcedureReported, value=PROCEDURE_CT_CHEST,
                                                   relationship_type=sr.RelationshipTypeValues.HAS_CONCEPT_MOD))
    evaluations = sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS,
                                          relationship_type=sr.RelationshipTypeValues.CONTAINS)
    evaluations.ContentSequence = sr.ContentSequence()
    evaluations.ContentSequence.append(sr.CodeContentItem(name=codes.SCT.Nodule, value=codes.SCT.Absent,
                                                          relationship_type=sr.RelationshipTypeValues.CONTAINS))
    root.ContentSequence.append(evaluations)
    return root


def write_sr(
    source_datasets: list[Dataset],
    findings: list[dict],
    out_path: str | os.PathLike[str],
    *,
    seg_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a Comprehensive 3D SR measurement report (TID 1500), one group per finding.

    Each group (TID 1410, planar ROI, whose region is the finding's centre as an SCOORD3D
    POINT with geometric purpose "Center") holds diameter, volume, malignancy probability
    and its SD, nodule probability, type and Lung-RADS-style category. With ``seg_path``
    the SEG instance is listed in the SR's evidence next to the CT slices, and its segments
    share the groups' tracking UIDs. No findings gives a valid, empty report: "analysed,
    nothing found" is a result a worklist must be able to see.
    """
    hd = _highdicom()
    codes = _codes()
    what = "write_sr"
    _check_sources(source_datasets, what)
    _check_findings(findings, what)
    first = source_datasets[0]
    series_uid = str(first.SeriesInstanceUID)
    for_uid = str(first.FrameOfReferenceUID)

    evidence = [_header(ds) for ds in source_datasets]
    if seg_path is not None:
        seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
        if str(seg.get("SOPClassUID", "")) != SegmentationStorage:
            raise InputValidationError(f"{what}: {seg_path} is not a DICOM Segmentation (SOPClassUID "
                                       f"{seg.get('SOPClassUID')})")
        if str(seg.get("StudyInstanceUID", "")) != str(first.StudyInstanceUID):
            raise InputValidationError(f"{what}: {seg_path} is from study {seg.get('StudyInstanceUID')}, the CT is "
                                       f"from {first.StudyInstanceUID}")
        evidence.append(seg)

    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=ALGORITHM_VERSION)
    groups = [_measurement_group(hd, codes, f, series_uid, for_uid, algorithm) for f in findings]
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=DEVICE_OBSERVER_UID, name=ALGORITHM_NAME,
                                                       manufacturer_name=MANUFACTURER, model_name=ALGORITHM_NAME)
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                                      observer_identifying_attributes=device))
    if groups:
        content = hd.sr.MeasurementReport(observation_context=context, procedure_reported=PROCEDURE_CT_CHEST,
                                          imaging_measurements=groups)[0]
    else:
        content = _empty_report(hd, codes, context)
    doc = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    doc.SeriesDescription = SR_SERIES_DESCRIPTION
    doc.SoftwareVersions = f"trillium {TRILLIUM_VERSION}"
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    doc.CodingSchemeIdentificationSequence = [scheme]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc.save_as(out)
    log.info("wrote SR %s: %d findings", out, len(findings))
    return out


# --------------------------------------------------------------------------- convenience

def _read_header(label: str) -> Dataset:
    """Header of one CT file named as ``load_ct`` names it: a path, or ``archive.zip!member``."""
    if "!" in label and not Path(label).exists():
        archive, member = label.split("!", 1)
        with zipfile.ZipFile(archive) as zf:
            return pydicom.dcmread(io.BytesIO(zf.read(member)), stop_before_pixels=True)
    return pydicom.dcmread(label, stop_before_pixels=True)


def export_findings(
    volume_or_files: Any,
    findings: list[dict],
    masks: list[np.ndarray] | None,
    out_dir: str | os.PathLike[str],
) -> dict[str, str]:
    """Write ``seg.dcm`` and ``sr.dcm`` for one analysed CT into ``out_dir``; returns their paths.

    ``volume_or_files`` is the ``CTVolume`` the findings were made on, or anything ``load_ct``
    reads (folder, zip, file list), which is then loaded to get the slice order. The CT
    headers are re-read from ``volume.files`` in that order and checked against the volume's
    SOP Instance UIDs, so a series changed on disk since the analysis is an error rather than
    masks on the wrong slices. With no findings (or ``masks=None``) only the SR is written.
    """
    _highdicom()  # fail before reading anything if the extra is missing
    from trillium.medical.imaging.dicom_io import CTVolume, load_ct

    volume = volume_or_files if isinstance(volume_or_files, CTVolume) else load_ct(volume_or_files)
    if not volume.files:
        raise InputValidationError("export_findings: the volume lists no source files to reference")
    if len(volume.files) != volume.hu.shape[0]:
        raise InputValidationError(f"export_findings: the volume has {volume.hu.shape[0]} slices but "
                                   f"{len(volume.files)} source files (interpolated slices?); a SEG frame must "
                                   "map to one real CT image")
    datasets = [_read_header(label) for label in volume.files]
    for k, (ds, uid) in enumerate(zip(datasets, volume.sop_instance_uids, strict=False)):
        if uid and str(ds.SOPInstanceUID) != uid:
            raise InputValidationError(f"export_findings: {volume.files[k]} now has SOPInstanceUID "
                                       f"{ds.SOPInstanceUID}, the analysed slice {k} had {uid}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, str] = {}
    seg_path = None
    if findings and masks is not None:
        seg_path = write_seg(datasets, masks, findings, out / "seg.dcm")
        result["seg"] = str(seg_path)
    result["sr"] = str(write_sr(datasets, findings, out / "sr.dcm", seg_path=seg_path))
    return result
