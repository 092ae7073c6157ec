"""Chest-CT series in and out of DICOM, with the geometry kept exact.

Why the care: a nodule's position is only useful if it can be found again on the scanner's
own viewer, so slices are ordered by where they are (``ImagePositionPatient`` projected on the
slice normal), never by file name or ``InstanceNumber``, the slice spacing comes from those
positions rather than ``SliceThickness``, and the volume keeps the 4x4 affine from voxel indices
to patient coordinates (DICOM LPS, millimetres). A gap, a duplicate, a tilted or mixed series
is an error that names the file and the tag, because silently stacking such a series would put
findings in the wrong place.

Arrays are indexed ``[k, j, i]`` = (slice, row, column); the affine takes ``(i, j, k, 1)`` as
DICOM does (i along a row, j down the columns, k along the slice normal).
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from trillium.core.errors import InputValidationError
from trillium.core.untrusted import LimitExceededError, check_pixels, iter_archive, limits

log = logging.getLogger(__name__)

#: Tags whose absence makes a slice unusable, with their (group, element) for the messages.
REQUIRED_TAGS = {
    "SeriesInstanceUID": "(0020,000E)",
    "ImagePositionPatient": "(0020,0032)",
    "ImageOrientationPatient": "(0020,0037)",
    "PixelSpacing": "(0028,0030)",
    "Rows": "(0028,0010)",
    "Columns": "(0028,0011)",
}
PIXEL_DATA_TAG = "(7FE0,0010)"
#: Orientation cosines within this of each other count as one orientation.
ORIENTATION_TOL = 1e-3
#: Relative tolerance on slice spacing before a series is called inconsistent.
SPACING_RTOL = 0.05

DICOMDIR_UID = "1.2.840.10008.1.3.10"
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


class DicomInputError(InputValidationError):
    """A DICOM input is unusable; the message names the file and, where one is at fault, the tag."""


@dataclass
class CTVolume:
    """One CT series as Hounsfield units on a regular grid, with where it sits in the patient."""

    hu: np.ndarray  # [k, j, i]; int16 when slope and intercept are integral, else float32
    affine: np.ndarray  # 4x4, (i, j, k, 1) -> LPS mm
    series_uid: str
    study_uid: str = ""
    patient_id: str | None = None
    study_date: str | None = None
    modality: str = "CT"
    description: str = ""
    files: list[str] = field(default_factory=list)  # in slice order
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    frame_of_reference_uid: str = ""
    sop_instance_uids: list[str] = field(default_factory=list)
    #: how the series was made, for monitoring (``imaging.monitoring``): ConvolutionKernel,
    #: SliceThickness and Manufacturer of the first slice ("" / None where absent)
    acquisition: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm in array order (slice, row, column)."""
        cols = np.linalg.norm(self.affine[:3, :3], axis=0)  # |i|, |j|, |k|
        return float(cols[2]), float(cols[1]), float(cols[0])

    def voxel_to_patient(self, kji: np.ndarray | Sequence[float]) -> np.ndarray:
        """Array indices ``[k, j, i]`` (one row or many, fractional allowed) to LPS mm ``[x, y, z]``."""
        p = np.atleast_2d(np.asarray(kji, dtype=float))
        ijk1 = np.c_[p[:, ::-1], np.ones(len(p))]
        out = ijk1 @ self.affine.T
        return out[:, :3] if np.ndim(kji) > 1 else out[0, :3]

    def patient_to_voxel(self, xyz: np.ndarray | Sequence[float]) -> np.ndarray:
        """LPS mm ``[x, y, z]`` to fractional array indices ``[k, j, i]``."""
        p = np.atleast_2d(np.asarray(xyz, dtype=float))
        ijk = np.c_[p, np.ones(len(p))] @ np.linalg.inv(self.affine).T
        out = ijk[:, 2::-1]
        return out if np.ndim(xyz) > 1 else out[0]


# --------------------------------------------------------------------------- discovery

def _members(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> tuple[list[tuple[str, Any]], bool]:
    """(label, opener) pairs for every candidate file; bool says whether non-DICOM files may be skipped.

    A folder or a zip may hold README files, DICOMDIRs and thumbnails next to the images, so
    those are skipped with a note; a file named explicitly must be DICOM.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise DicomInputError(f"{path}: no such file or folder")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            if not files:
                raise DicomInputError(f"{path}: the folder holds no files")
            return [(str(p), p) for p in files], True
        if zipfile.is_zipfile(path):
            # listed and size-checked before any member is expanded (trillium.core.untrusted)
            members = [(f"{path}!{n}", io.BytesIO(data)) for n, data in iter_archive(path)]
            if not members:
                raise DicomInputError(f"{path}: the zip archive holds no files")
            return members, True
        return [(str(path), path)], False
    files = [Path(p).expanduser() for p in source]
    if not files:
        raise DicomInputError("no DICOM files given")
    for p in files:
        if not p.is_file():
            raise DicomInputError(f"{p}: no such file")
    return [(str(p), p) for p in files], False


def check_deflated_size(label: str, opener: Any) -> None:
    """Refuse a Deflated Explicit VR file whose dataset inflates past ``member_bytes``.

    pydicom inflates such a file's whole dataset in one ``zlib.decompress`` before reading any
    element, so a few kilobytes could become gigabytes; this inflates it first in bounded
    steps, counting without keeping, and refuses at the limit.
    """
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        fp = opener if isinstance(opener, io.BytesIO) else open(opener, "rb")  # noqa: SIM115
    except OSError:
        return  # unreadable: dcmread reports it with the file's name
    try:
        fp.seek(0)
        if b"1.2.840.10008.1.2.1.99" not in fp.read(16384):
            return
        fp.seek(0)
        try:
            read_preamble(fp, False)
            meta = _read_file_meta_info(fp)
        except Exception:  # noqa: BLE001 - dcmread reports a broken header with the file's name
            return
        if str(meta.get("TransferSyntaxUID", "")) != "1.2.840.10008.1.2.1.99":
            return
        cap = limits().member_bytes
        inflater, produced = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while chunk := fp.read(1 << 20):
            while chunk:
                produced += len(inflater.decompress(chunk, 1 << 20))
                if produced > cap:
                    raise LimitExceededError(label, "the deflated dataset, inflated", f"more than {cap:,} bytes",
                                             "member_bytes", cap)
                chunk = inflater.unconsumed_tail
    except (zlib.error, OSError):
        return  # not valid deflate data, or unreadable: dcmread says so with the file's name
    finally:
        if fp is not opener:
            fp.close()


def _check_frame(ds: Dataset, label: str) -> None:
    """Refuse a header whose pixel data would decode past ``dicom_pixel_bytes``, before decoding."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError) as exc:
        raise DicomInputError(f"{label}: Rows, Columns, NumberOfFrames, SamplesPerPixel or BitsAllocated "
                              f"is not an integer ({exc})") from exc
    if not rows or not cols:
        return  # _require names the missing tag later
    check_pixels(label, rows, cols, frames=max(frames, 1), samples=max(samples, 1),
                 bytes_per_sample=max(1, (bits + 7) // 8), limit_name="dicom_pixel_bytes")


def _read(label: str, opener: Any, *, pixels: bool, convert_all: bool = True) -> Dataset:
    """``convert_all`` False: the header pass already converted every element of this file (the
    pixel pass reads it a second time), so only the elements the pixel pass asks for are."""
    try:
        if isinstance(opener, io.BytesIO):
            opener.seek(0)
        ds = pydicom.dcmread(opener, stop_before_pixels=not pixels)
        if convert_all:
            # pydicom converts each value on first access: convert them all now, so that a garbled
            # element (unknown VR, bad length) fails here, naming the file, not later in a bare ds.get
            for elem in ds:
                elem.value  # noqa: B018
            for elem in getattr(ds, "file_meta", None) or ():
                elem.value  # noqa: B018
        return ds
    except InvalidDicomError as exc:
        raise DicomInputError(f"{label}: not a DICOM file (no DICM preamble or valid header: {exc})") from exc
    except Exception as exc:  # truncated or garbled files raise assorted errors inside pydicom
        raise DicomInputError(f"{label}: unreadable DICOM ({type(exc).__name__}: {exc})") from exc


def _require(ds: Dataset, label: str, keyword: str) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        raise DicomInputError(f"{label}: missing tag {keyword} {REQUIRED_TAGS.get(keyword, '')}".rstrip())
    return value


def _floats(ds: Dataset, label: str, keyword: str, n: int) -> np.ndarray:
    value = _require(ds, label, keyword)
    try:
        arr = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise DicomInputError(f"{label}: tag {keyword} {REQUIRED_TAGS[keyword]} is not numeric: {value!r}") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomInputError(f"{label}: tag {keyword} {REQUIRED_TAGS[keyword]} needs {n} finite numbers, got {value!r}")
    return arr


@dataclass
class _Slice:
    label: str
    opener: Any
    ds: Dataset
    position: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray  # PixelSpacing: [row spacing, column spacing]


def list_series(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """What series a folder, zip or file list holds (uid, modality, slices, description)."""
    headers, _, _ = _headers(source)
    out: dict[str, dict[str, Any]] = {}
    for label, _, ds in headers:
        uid = str(ds.get("SeriesInstanceUID", ""))
        entry = out.setdefault(uid, {"series_uid": uid, "modality": str(ds.get("Modality", "")), "slices": 0,
                                     "description": str(ds.get("SeriesDescription", "")), "first_file": label})
        entry["slices"] += 1
    return sorted(out.values(), key=lambda e: -e["slices"])


def _headers(source: Any) -> tuple[list[tuple[str, Any, Dataset]], bool, list[tuple[str, str]]]:
    members, lenient = _members(source)
    headers, skipped = [], []
    for label, opener in members:
        check_deflated_size(label, opener)  # once per file, before pydicom first inflates it
        try:
            ds = _read(label, opener, pixels=False)
        except DicomInputError as exc:
            if not lenient:
                raise
            skipped.append((label, str(exc)))
            continue
        _check_frame(ds, label)
        meta = getattr(ds, "file_meta", None)
        if "DirectoryRecordSequence" in ds or (meta is not None and meta.get("MediaStorageSOPClassUID") == DICOMDIR_UID):
            skipped.append((label, "DICOMDIR (a media index, not an image)"))
            continue
        headers.append((label, opener, ds))
    if not headers:
        first = skipped[0][1] if skipped else "no files"
        raise DicomInputError(f"{source}: no DICOM files found ({len(skipped)} other files; first: {first})")
    return headers, lenient, skipped


def _is_axial(orientation: np.ndarray) -> bool:
    normal = np.cross(orientation[:3], orientation[3:])
    return abs(normal[2]) > 0.8


# --------------------------------------------------------------------------- loading

def load_ct(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    series_uid: str | None = None,
    interpolate_missing: bool = False,
    workers: int = 4,
) -> CTVolume:
    """Read one axial CT series from a folder (recursive, any file names), a zip, or a file list.

    With several series the axial CT one with the most slices is taken unless ``series_uid``
    names one. A missing slice is an error unless ``interpolate_missing`` is set, in which case
    the gap is filled by linear interpolation and a warning is recorded on the volume.
    """
    plan = _plan_series(source, series_uid=series_uid, interpolate_missing=interpolate_missing)
    slices, ref, warnings, fill = plan.slices, plan.ref, plan.warnings, plan.fill
    hu = _read_pixels(slices, workers=workers)
    if fill:
        hu = _interpolate_gaps(hu, fill)
        for w in warnings:
            log.warning(w)

    row_cos, col_cos = ref.orientation[:3], ref.orientation[3:]
    sy, sx = float(ref.spacing[0]), float(ref.spacing[1])
    affine = np.eye(4)
    affine[:3, 0] = row_cos * sx
    affine[:3, 1] = col_cos * sy
    affine[:3, 2] = plan.normal * plan.step
    affine[:3, 3] = slices[0].position

    ds0 = slices[0].ds
    return CTVolume(
        hu=hu, affine=affine, series_uid=plan.series_uid,
        study_uid=str(ds0.get("StudyInstanceUID", "")),
        patient_id=str(ds0.get("PatientID", "")) or None,
        study_date=_da_date(str(ds0.get("StudyDate", ""))),
        modality=str(ds0.get("Modality", "CT")),
        description=str(ds0.get("SeriesDescription", "")),
        files=[s.label for s in slices], warnings=warnings, skipped=plan.skipped,
        frame_of_reference_uid=str(ds0.get("FrameOfReferenceUID", "")),
        sop_instance_uids=[str(s.ds.get("SOPInstanceUID", "")) for s in slices],
        acquisition=_acquisition(ds0),
    )


def _acquisition(ds: Dataset) -> dict[str, Any]:
    """ConvolutionKernel (0018,1210; multi-valued on some scanners: joined with a backslash),
    SliceThickness (0018,0050; None when absent or not a finite number), Manufacturer (0008,0070)."""
    kernel = ds.get("ConvolutionKernel", "")
    kernel = "\\".join(str(k) for k in kernel) if isinstance(kernel, MultiValue) else str(kernel)
    try:
        thickness: float | None = float(ds.get("SliceThickness"))
    except (TypeError, ValueError):
        thickness = None
    if thickness is not None and not np.isfinite(thickness):
        thickness = None
    return {"kernel": kernel.strip(), "slice_thickness": thickness,
            "manufacturer": str(ds.get("Manufacturer", "")).strip()}


def check_ct_series(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    series_uid: str | None = None,
    interpolate_missing: bool = False,
) -> dict[str, Any]:
    """Every check ``load_ct`` makes before it decodes a pixel: the files are DICOM, a CT series
    is there, its tags and geometry are whole (the same code, so a series this accepts is one
    ``load_ct`` reads unless its pixel data itself is corrupt). Reads headers only, so a
    service can refuse a bad upload at once. Returns what the series is: ``series_uid``,
    ``study_uid``, ``patient_id``, ``study_date``, ``slices``, ``skipped`` (files left out)."""
    plan = _plan_series(source, series_uid=series_uid, interpolate_missing=interpolate_missing)
    ds0 = plan.slices[0].ds
    return {"series_uid": plan.series_uid, "study_uid": str(ds0.get("StudyInstanceUID", "")),
            "patient_id": str(ds0.get("PatientID", "")) or None,
            "study_date": _da_date(str(ds0.get("StudyDate", ""))), "slices": len(plan.slices),
            "skipped": [label for label, _ in plan.skipped]}


@dataclass
class _SeriesPlan:
    """The chosen series' slices in order and its geometry, from the headers alone."""

    series_uid: str
    slices: list[_Slice]
    ref: _Slice  # the slice the others were checked against (its orientation and spacing are the series')
    normal: np.ndarray
    step: float
    warnings: list[str]
    fill: list[tuple[int, int]]
    skipped: list[tuple[str, str]]


def _plan_series(source: Any, *, series_uid: str | None, interpolate_missing: bool) -> _SeriesPlan:
    headers, _, skipped = _headers(source)
    by_series: dict[str, list[tuple[str, Any, Dataset]]] = {}
    for label, opener, ds in headers:
        uid = str(_require(ds, label, "SeriesInstanceUID"))
        by_series.setdefault(uid, []).append((label, opener, ds))

    if series_uid is not None:
        if series_uid not in by_series:
            raise DicomInputError(f"{source}: no series with SeriesInstanceUID (0020,000E) {series_uid}; "
                                  f"found {sorted(by_series)}")
        chosen = series_uid
    else:
        ct = {uid: items for uid, items in by_series.items()
              if str(items[0][2].get("Modality", "")).upper() == "CT"}
        if not ct:
            found = ", ".join(f"{uid} ({items[0][2].get('Modality', '?')}, {len(items)} files, e.g. {items[0][0]})"
                              for uid, items in by_series.items())
            raise DicomInputError(f"{source}: no CT series (Modality (0008,0060) = CT) among: {found}")
        axial = {}
        for uid, items in ct.items():
            ds0, label0 = items[0][2], items[0][0]
            if "ImageOrientationPatient" in ds0 and _is_axial(_floats(ds0, label0, "ImageOrientationPatient", 6)):
                axial[uid] = items
        pool = axial or ct
        chosen = max(pool, key=lambda uid: len(pool[uid]))
    items = by_series[chosen]

    slices = []
    for label, opener, ds in items:
        modality = str(ds.get("Modality", "")).upper()
        if modality and modality != "CT":
            raise DicomInputError(f"{label}: Modality (0008,0060) is {modality}, not CT")
        slices.append(_Slice(label, opener, ds,
                             _floats(ds, label, "ImagePositionPatient", 3),
                             _floats(ds, label, "ImageOrientationPatient", 6),
                             _floats(ds, label, "PixelSpacing", 2)))
    ref = slices[0]
    if not (ref.spacing >= 1e-6).all():  # the others must match it (checked below)
        raise DicomInputError(f"{ref.label}: PixelSpacing (0028,0030) {ref.spacing.tolist()} must be two positive "
                              "numbers (mm between rows, between columns)")
    for s in slices[1:]:
        if np.max(np.abs(s.orientation - ref.orientation)) > ORIENTATION_TOL:
            raise DicomInputError(f"{s.label}: mixed orientations in series {chosen}: ImageOrientationPatient "
                                  f"(0020,0037) {s.orientation.round(4).tolist()} differs from "
                                  f"{ref.orientation.round(4).tolist()} in {ref.label}")
        if np.max(np.abs(s.spacing - ref.spacing)) > 1e-4:
            raise DicomInputError(f"{s.label}: PixelSpacing (0028,0030) {s.spacing.tolist()} differs from "
                                  f"{ref.spacing.tolist()} in {ref.label}")
        for key in ("Rows", "Columns"):
            if int(_require(s.ds, s.label, key)) != int(_require(ref.ds, ref.label, key)):
                raise DicomInputError(f"{s.label}: {key} {REQUIRED_TAGS[key]} {s.ds.get(key)} differs from "
                                      f"{ref.ds.get(key)} in {ref.label}")

    row_cos, col_cos = ref.orientation[:3], ref.orientation[3:]
    normal = np.cross(row_cos, col_cos)
    norm = np.linalg.norm(normal)
    if not (0.99 < np.linalg.norm(row_cos) < 1.01 and 0.99 < np.linalg.norm(col_cos) < 1.01) or norm < 0.99:
        raise DicomInputError(f"{ref.label}: ImageOrientationPatient (0020,0037) {ref.orientation.tolist()} "
                              "is not two orthonormal direction cosines")
    normal /= norm
    offsets = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(offsets, kind="stable")
    slices = [slices[i] for i in order]
    offsets = offsets[order]

    warnings: list[str] = []
    if len(slices) == 1:
        try:  # a single slice's spacing comes from its thickness: one positive finite number
            thickness = float(ref.ds.get("SliceThickness", 1.0) or 1.0)
        except (TypeError, ValueError) as exc:
            raise DicomInputError(f"{ref.label}: SliceThickness (0018,0050) must be one number, "
                                  f"got {ref.ds.get('SliceThickness')!r}") from exc
        if not (np.isfinite(thickness) and thickness >= 1e-6):
            raise DicomInputError(f"{ref.label}: SliceThickness (0018,0050) is {thickness}; "
                                  "a single slice needs a positive finite thickness")
        gaps, step = np.array([]), thickness
    else:
        gaps = np.diff(offsets)
        dup = np.flatnonzero(gaps < 1e-3)
        if len(dup):
            a, b = slices[dup[0]], slices[dup[0] + 1]
            raise DicomInputError(f"{b.label}: duplicate slice position: ImagePositionPatient (0020,0032) "
                                  f"{b.position.tolist()} is also in {a.label}")
        step = float(np.median(gaps))
        # In-plane drift of the positions means a sheared stack, which the affine cannot hold.
        inplane = [(s.position - slices[0].position) - ((s.position - slices[0].position) @ normal) * normal
                   for s in slices]
        drift = max(float(np.linalg.norm(v)) for v in inplane)
        if drift > 0.5 * float(min(ref.spacing)):
            raise DicomInputError(f"{source}: series {chosen} slices are sheared: ImagePositionPatient (0020,0032) "
                                  f"moves {drift:.2f} mm in-plane across the stack (gantry tilt is not supported)")

    fill: list[tuple[int, int]] = []  # (index after which to insert, number of missing slices)
    for n, gap in enumerate(gaps):
        ratio = gap / step
        if abs(ratio - 1) <= SPACING_RTOL:
            continue
        missing = int(np.rint(ratio)) - 1
        a, b = slices[n], slices[n + 1]
        if missing >= 1 and abs(ratio - np.rint(ratio)) <= SPACING_RTOL * np.rint(ratio):
            msg = (f"{b.label}: {missing} missing slice(s) between ImagePositionPatient (0020,0032) "
                   f"{a.position.round(3).tolist()} ({a.label}) and {b.position.round(3).tolist()}: gap "
                   f"{gap:.3f} mm, spacing {step:.3f} mm")
            if not interpolate_missing:
                raise DicomInputError(msg + " (pass interpolate_missing to fill it by interpolation)")
            warnings.append(msg + "; filled by linear interpolation")
            fill.append((n, missing))
        else:
            raise DicomInputError(f"{b.label}: inconsistent slice spacing: ImagePositionPatient (0020,0032) "
                                  f"{b.position.round(3).tolist()} is {gap:.3f} mm from the previous slice "
                                  f"({a.label}), the series spacing is {step:.3f} mm")

    return _SeriesPlan(chosen, slices, ref, normal, step, warnings, fill, skipped)


def _da_date(value: str) -> str | None:
    """A DICOM DA date (YYYYMMDD) as stored, or None when the element is empty or malformed."""
    value = value.strip()
    return value if len(value) == 8 and value.isdigit() else None


def _slice_hu(s: _Slice) -> tuple[np.ndarray, bool]:
    """One slice's pixels in HU; the fast path reads uncompressed 16-bit pixels straight from
    the buffer, everything else (compressed syntaxes, odd bit depths) goes through pydicom."""
    ds = _read(s.label, s.opener, pixels=True, convert_all=False)  # its header passed _read and _check_frame in _headers
    if "PixelData" not in ds:
        raise DicomInputError(f"{s.label}: missing tag PixelData {PIXEL_DATA_TAG}")
    try:  # an empty, repeated or text value must name the file, not raise TypeError / ValueError
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.get("BitsAllocated", 16))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        samples = int(ds.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise DicomInputError(f"{s.label}: Rows (0028,0010), Columns (0028,0011), BitsAllocated (0028,0100), "
                              f"PixelRepresentation (0028,0103) and SamplesPerPixel (0028,0002) must each be one "
                              f"integer ({type(exc).__name__}: {exc})") from exc
    if rows < 1 or cols < 1:
        raise DicomInputError(f"{s.label}: Rows x Columns (0028,0010 / 0028,0011) is {rows} x {cols}; "
                              "a CT slice needs at least 1 x 1")
    if samples != 1:
        raise DicomInputError(f"{s.label}: SamplesPerPixel (0028,0002) is {samples}; CT needs 1")
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    try:
        if (syntax in _UNCOMPRESSED and syntax != "1.2.840.10008.1.2.2" and bits == 16
                and int(ds.get("BitsStored", 16)) == 16):
            raw = np.frombuffer(ds.PixelData, dtype="<i2" if signed else "<u2", count=rows * cols)
            pixels = raw.reshape(rows, cols)
        else:
            pixels = ds.pixel_array
    except Exception as exc:
        raise DicomInputError(f"{s.label}: cannot decode PixelData {PIXEL_DATA_TAG} (transfer syntax {syntax}; "
                              f"{type(exc).__name__}: {exc})") from exc
    if pixels.shape != (rows, cols):
        raise DicomInputError(f"{s.label}: PixelData {PIXEL_DATA_TAG} holds {pixels.shape}, Rows x Columns is "
                              f"{rows} x {cols} (multi-frame CT is not supported)")
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise DicomInputError(f"{s.label}: RescaleSlope (0028,1053) and RescaleIntercept (0028,1052) must each be "
                              f"one number, got {ds.get('RescaleSlope')!r} and {ds.get('RescaleIntercept')!r}") from exc
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise DicomInputError(f"{s.label}: RescaleSlope (0028,1053) {slope} and RescaleIntercept (0028,1052) "
                              f"{intercept} must be finite")
    # integral and small enough that int64 arithmetic cannot wrap (16-bit pixels x 2**31 < 2**63)
    integral = slope == int(slope) and intercept == int(intercept) and max(abs(slope), abs(intercept)) < 2**31
    if integral:
        out = pixels.astype(np.int64)
        if slope != 1:
            out *= int(slope)
        out += int(intercept)
        return np.clip(out, -32768, 32767).astype(np.int16), True
    with np.errstate(over="ignore", invalid="ignore"):
        hu = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if not np.isfinite(hu).all():
        raise DicomInputError(f"{s.label}: RescaleSlope (0028,1053) {slope} and RescaleIntercept (0028,1052) "
                              f"{intercept} put Hounsfield units outside the float32 range")
    return hu, False


def _read_pixels(slices: list[_Slice], *, workers: int) -> np.ndarray:
    # Reading is mostly I/O and buffer copies that release the GIL, so a few threads help.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(_slice_hu, slices))
    if all(integral for _, integral in results):
        return np.stack([r for r, _ in results])
    return np.stack([r.astype(np.float32) for r, _ in results])


def _interpolate_gaps(hu: np.ndarray, fill: list[tuple[int, int]]) -> np.ndarray:
    parts, last = [], 0
    for after, missing in fill:
        parts.append(hu[last:after + 1])
        a, b = hu[after].astype(np.float32), hu[after + 1].astype(np.float32)
        for m in range(1, missing + 1):
            t = m / (missing + 1)
            parts.append(((1 - t) * a + t * b).astype(hu.dtype)[None])
        last = after + 1
    parts.append(hu[last:])
    return np.concatenate(parts)


def iter_study_dirs(root: str | os.PathLike[str]) -> list[Path]:
    """The studies under ``root``: each sub-folder (with everything below it, so a study's
    per-series sub-folders stay one study) and each zip file directly in ``root``; ``root``
    itself when it holds DICOM files directly and no sub-folders."""
    root = Path(root)
    if not root.is_dir():
        raise InputValidationError(f"{root}: not a folder")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    studies = [p for p in entries if p.is_dir() or (p.is_file() and p.suffix.lower() == ".zip")]
    if not studies and any(p.is_file() for p in entries):
        return [root]
    return studies
