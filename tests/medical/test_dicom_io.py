"""The chest-CT DICOM path on real files: write a series, damage or reshuffle it, read it back.

Every case writes small series (10 x 32 x 32) into ``tmp_path`` with ``write_ct_series`` and
then edits the files with pydicom, so what ``load_ct`` sees is what a scanner export or a PACS
download would hand it. The checks are on the Hounsfield units, the slice order and the affine
(voxel index to DICOM LPS millimetres), and on errors that name both the file and the tag.
"""

from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, RLELossless, generate_uid

from trillium.core.errors import InputValidationError
from trillium.medical.imaging.dicom_io import CTVolume, DicomInputError, iter_study_dirs, list_series, load_ct
from trillium.medical.imaging.dicom_write import SeriesInfo, write_ct_series
from trillium.medical.imaging.measure import lung_rads_category
from trillium.medical.imaging.phantom import NODULE_TYPES, write_phantom

SHAPE = (10, 32, 32)
SPACING = (2.5, 0.7, 0.8)  # (sz, sy, sx): anisotropic in-plane so rows and columns cannot be swapped unseen
ORIGIN = (-100.5, -80.25, -300.0)  # LPS of voxel (0, 0, 0)


def _hu(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A random int16 HU volume over the CT range, with both ends present."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1024, 2001, size=shape).astype(np.int16)
    hu[0, 0, 0], hu[-1, -1, -1] = -1024, 2000
    return hu


def _write(folder: Path, hu: np.ndarray | None = None, **kw: object) -> list[Path]:
    """A series with files named ``slice0000.dcm``... by array index, so tests can pick one."""
    kw.setdefault("spacing", SPACING)
    kw.setdefault("origin", ORIGIN)
    kw.setdefault("file_names", "index")
    return write_ct_series(_hu() if hu is None else hu, folder, **kw)  # type: ignore[arg-type]


def _edit(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _expected_affine(origin: tuple[float, float, float] = ORIGIN) -> np.ndarray:
    sz, sy, sx = SPACING
    aff = np.diag([sx, sy, sz, 1.0])
    aff[:3, 3] = origin
    return aff


def _assert_files_sit_at_their_index(vol: CTVolume) -> None:
    """Each file's ImagePositionPatient is where the affine puts voxel (k, 0, 0) of its slice."""
    assert len(vol.files) == vol.shape[0]
    for k, label in enumerate(vol.files):
        ipp = np.array([float(v) for v in pydicom.dcmread(label, stop_before_pixels=True).ImagePositionPatient])
        np.testing.assert_allclose(vol.voxel_to_patient([k, 0, 0]), ipp, atol=1e-6)


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, np.ndarray, list[Path]]:
    folder = tmp_path / "ct"
    hu = _hu()
    return folder, hu, _write(folder, hu)


# --------------------------------------------------------------------------- 1. round trip


def test_round_trip_keeps_hu_shape_spacing_and_affine(tmp_path: Path) -> None:
    hu = _hu()
    info = SeriesInfo(patient_id="P-1", study_date="20240131", description="round trip")
    paths = write_ct_series(hu, tmp_path, spacing=SPACING, origin=ORIGIN, info=info)
    assert len(paths) == SHAPE[0] and all(p.parent == tmp_path for p in paths)

    vol = load_ct(tmp_path)
    assert vol.hu.dtype == np.int16
    assert vol.shape == SHAPE
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.hu.min() == -1024 and vol.hu.max() == 2000
    np.testing.assert_allclose(vol.spacing, SPACING, atol=1e-9)
    np.testing.assert_allclose(vol.affine, _expected_affine(), atol=1e-9)
    assert vol.series_uid == info.series_uid and vol.study_uid == info.study_uid
    assert vol.frame_of_reference_uid == info.frame_of_reference_uid
    assert vol.patient_id == "P-1" and vol.study_date == "20240131" and vol.description == "round trip"
    assert vol.modality == "CT" and vol.warnings == [] and vol.skipped == []
    assert len(vol.sop_instance_uids) == SHAPE[0] and len(set(vol.sop_instance_uids)) == SHAPE[0]
    _assert_files_sit_at_their_index(vol)

    sz, sy, sx = SPACING
    for k, j, i in [(0, 0, 0), (9, 31, 31), (3, 7, 20), (2.5, 0.25, 10.75)]:
        expected = np.array(ORIGIN) + np.array([i * sx, j * sy, k * sz])
        got = vol.voxel_to_patient((k, j, i))
        assert got.shape == (3,)
        np.testing.assert_allclose(got, expected, atol=1e-9)
        back = vol.patient_to_voxel(got)
        assert back.shape == (3,)
        np.testing.assert_allclose(back, [k, j, i], atol=1e-9)

    pts = np.random.default_rng(1).uniform(0, 1, (25, 3)) * (np.array(SHAPE) - 1)
    mm = vol.voxel_to_patient(pts)
    assert mm.shape == (25, 3)
    np.testing.assert_allclose(mm, np.array(ORIGIN) + pts[:, ::-1] * np.array([sx, sy, sz]), atol=1e-9)
    np.testing.assert_allclose(vol.patient_to_voxel(mm), pts, atol=1e-9)
    # one point given as a 1 x 3 array stays 2-D
    assert vol.voxel_to_patient([[1, 2, 3]]).shape == (1, 3)
    assert vol.patient_to_voxel([list(ORIGIN)]).shape == (1, 3)


def test_file_names_uid_and_index(tmp_path: Path) -> None:
    by_uid = write_ct_series(_hu(), tmp_path / "uid", spacing=SPACING)
    by_index = write_ct_series(_hu(), tmp_path / "index", spacing=SPACING, file_names="index")
    assert {p.stem for p in by_uid} == {str(pydicom.dcmread(p).SOPInstanceUID) for p in by_uid}
    assert [p.name for p in by_index] == [f"slice{k:04d}.dcm" for k in range(SHAPE[0])]
    # InstanceNumber runs against the array order, to catch readers that sort by it
    assert [int(pydicom.dcmread(p).InstanceNumber) for p in by_index] == list(range(SHAPE[0], 0, -1))
    np.testing.assert_array_equal(load_ct(tmp_path / "uid").hu, load_ct(tmp_path / "index").hu)


def test_unknown_compression_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match="compression"):
        write_ct_series(_hu(), tmp_path, spacing=SPACING, compression="jpeg2000")


# --------------------------------------------------------------------------- 2. slice order


def test_order_ignores_file_names(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, hu, paths = series
    rng = np.random.default_rng(7)
    # names in the reverse of the slice order, others random, some in a subfolder, some without extension
    for k, p in enumerate(paths):
        if k % 3 == 0:
            target = folder / f"{SHAPE[0] - k:03d}"
        elif k % 3 == 1:
            target = folder / "sub" / f"{uuid.UUID(int=int(rng.integers(1 << 62))).hex}.dcm"
        else:
            target = folder / f"IM{rng.integers(1 << 30)}"
        target.parent.mkdir(exist_ok=True)
        p.rename(target)
    vol = load_ct(folder)
    np.testing.assert_array_equal(vol.hu, hu)
    np.testing.assert_allclose(vol.affine, _expected_affine(), atol=1e-9)
    _assert_files_sit_at_their_index(vol)


def test_order_ignores_instance_number(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, hu, paths = series
    numbers = np.random.default_rng(3).permutation(np.arange(1, 1000))[: len(paths)]
    for p, n in zip(paths, numbers, strict=True):
        _edit(p, lambda ds, n=n: setattr(ds, "InstanceNumber", int(n)))
    assert [int(pydicom.dcmread(p).InstanceNumber) for p in paths] == [int(n) for n in numbers]
    vol = load_ct(folder)
    np.testing.assert_array_equal(vol.hu, hu)
    np.testing.assert_allclose(vol.affine, _expected_affine(), atol=1e-9)


def test_positions_decreasing_with_file_index_load_ascending(
        series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, hu, paths = series
    n = len(paths)
    sz, sy, sx = SPACING

    def place(ds: pydicom.Dataset, k: int) -> None:
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] - k * sz]
        ds.InstanceNumber = k + 1  # now numbering agrees with the files, still not with position

    for k, p in enumerate(paths):
        _edit(p, lambda ds, k=k: place(ds, k))
    vol = load_ct(folder)
    np.testing.assert_array_equal(vol.hu, hu[::-1])
    lowest = (ORIGIN[0], ORIGIN[1], ORIGIN[2] - (n - 1) * sz)
    np.testing.assert_allclose(vol.affine, _expected_affine(lowest), atol=1e-9)
    assert [Path(f).name for f in vol.files] == [p.name for p in paths][::-1]
    _assert_files_sit_at_their_index(vol)
    # written voxel (k, j, i) sat at z0 - k*sz; it is now loaded voxel (n-1-k, j, i) at the same place
    for k, j, i in [(0, 0, 0), (2, 5, 9), (9, 31, 0)]:
        where = np.array([ORIGIN[0] + i * sx, ORIGIN[1] + j * sy, ORIGIN[2] - k * sz])
        np.testing.assert_allclose(vol.voxel_to_patient((n - 1 - k, j, i)), where, atol=1e-9)
        assert vol.hu[n - 1 - k, j, i] == hu[k, j, i]


def test_flipped_column_direction_gives_negative_normal(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    """Columns running anterior (-y) turn the slice normal to -z: ascending along it is descending z."""
    folder, hu, paths = series
    for p in paths:
        _edit(p, lambda ds: setattr(ds, "ImageOrientationPatient", [1.0, 0.0, 0.0, 0.0, -1.0, 0.0]))
    vol = load_ct(folder)
    sz, sy, sx = SPACING
    n = SHAPE[0]
    np.testing.assert_array_equal(vol.hu, hu[::-1])
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag([sx, -sy, -sz]), atol=1e-9)
    np.testing.assert_allclose(vol.affine[:3, 3], [ORIGIN[0], ORIGIN[1], ORIGIN[2] + (n - 1) * sz], atol=1e-9)
    np.testing.assert_allclose(vol.spacing, SPACING, atol=1e-9)
    _assert_files_sit_at_their_index(vol)


def test_oblique_orientation_affine(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    """Slices tilted 20 degrees about x, stacked along their own normal: the affine carries the tilt."""
    folder, hu, paths = series
    a = np.deg2rad(20)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(a), np.sin(a)])
    normal = np.cross(row, col)
    sz, sy, sx = SPACING

    def tilt(ds: pydicom.Dataset, k: int) -> None:
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.array(ORIGIN) + k * sz * normal]

    for k, p in enumerate(paths):
        _edit(p, lambda ds, k=k: tilt(ds, k))
    vol = load_ct(folder)
    np.testing.assert_array_equal(vol.hu, hu)
    np.testing.assert_allclose(vol.spacing, SPACING, atol=1e-6)
    for k, j, i in [(0, 0, 0), (9, 31, 31), (4, 10, 3)]:
        expected = np.array(ORIGIN) + i * sx * row + j * sy * col + k * sz * normal
        np.testing.assert_allclose(vol.voxel_to_patient((k, j, i)), expected, atol=1e-5)
        np.testing.assert_allclose(vol.patient_to_voxel(expected), [k, j, i], atol=1e-5)


# --------------------------------------------------------------------------- 2b. series not written by write_ct_series
#
# The tests above write with the project's own writer, so a row/column mix-up made the same way in
# writer and reader would round-trip unseen. These slices are built field by field with pydicom,
# and the expectations come from the DICOM standard (PS3.3 C.7.6.2.1.1), worked out here by hand:
#
#     P(r, c) = ImagePositionPatient + row_dir * c * PixelSpacing[1] + col_dir * r * PixelSpacing[0]
#
# with row_dir = ImageOrientationPatient[0:3] (the direction of increasing column index c) and
# col_dir = ImageOrientationPatient[3:6] (increasing row index r); PixelSpacing[0] is the distance
# between rows, PixelSpacing[1] between columns.

HAND_ROW_DIR = np.array([0.8, 0.6, 0.0])
HAND_COL_DIR = np.array([-0.36, 0.48, 0.8])
HAND_NORMAL = np.array([0.48, -0.64, 0.6])  # row_dir x col_dir, worked out by hand
HAND_PIXEL_SPACING = (0.7, 0.8)  # (between rows, between columns)
HAND_STEP = 2.5  # mm between slice planes along the normal
HAND_FIRST = np.array([-12.5, 30.25, -47.0])  # ImagePositionPatient of the lowest slice
HAND_ROWS, HAND_COLS, HAND_SLICES = 6, 9, 4
HAND_SLOPE, HAND_INTERCEPT = 2, -1024
HAND_MARK = (2, 1, 7)  # (slice in position order, row, column) that holds the one bright pixel
HAND_MARK_STORED = 1900


def _hand_stored() -> np.ndarray:
    """Stored values [slice, row, column]: each pixel names its place, one pixel much brighter."""
    s, r, c = np.indices((HAND_SLICES, HAND_ROWS, HAND_COLS))
    stored = 600 + 100 * s + 10 * r + c
    stored[HAND_MARK] = HAND_MARK_STORED
    return stored


def _hand_series(folder: Path, bits_stored: int) -> list[Path]:
    """A 4-slice oblique CT series written with pydicom alone, files in no useful order."""
    folder.mkdir(parents=True)
    stored = _hand_stored()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for n, k in enumerate([2, 0, 3, 1]):  # file order, InstanceNumber and names all unrelated to position
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{7 * n + 3:05d}"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.Modality = "CT"
        ds.PatientID = "HAND-1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.InstanceNumber = 10 + n
        ds.ImageOrientationPatient = ["0.8", "0.6", "0", "-0.36", "0.48", "0.8"]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in HAND_FIRST + k * HAND_STEP * HAND_NORMAL]
        ds.PixelSpacing = ["0.7", "0.8"]
        ds.SliceThickness = "2.5"
        ds.Rows, ds.Columns = HAND_ROWS, HAND_COLS
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 0
        ds.RescaleSlope = str(HAND_SLOPE)
        ds.RescaleIntercept = str(HAND_INTERCEPT)
        ds.PixelData = stored[k].astype("<u2").tobytes()  # row by row, each row left to right
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.mark.parametrize("bits_stored", [16, 12])  # 16 takes the loader's raw-buffer path, 12 pydicom's decoder
def test_pydicom_built_oblique_series_against_the_standard(tmp_path: Path, bits_stored: int) -> None:
    np.testing.assert_allclose(np.cross(HAND_ROW_DIR, HAND_COL_DIR), HAND_NORMAL, atol=1e-12)
    paths = _hand_series(tmp_path / "scanner", bits_stored)
    vol = load_ct(tmp_path / "scanner")

    # slices in position order along the normal; file order was 2, 0, 3, 1
    assert vol.files == [str(paths[n]) for n in (1, 3, 0, 2)]
    assert vol.shape == (HAND_SLICES, HAND_ROWS, HAND_COLS)
    dr, dc = HAND_PIXEL_SPACING
    np.testing.assert_allclose(vol.spacing, (HAND_STEP, dr, dc), atol=1e-9)

    # the affine (i = column, j = row, k = slice) -> LPS mm, from the standard's equation
    expected = np.eye(4)
    expected[:3, 0] = HAND_ROW_DIR * dc
    expected[:3, 1] = HAND_COL_DIR * dr
    expected[:3, 2] = HAND_NORMAL * HAND_STEP
    expected[:3, 3] = HAND_FIRST
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    kk, rr, cc = (g.ravel() for g in np.indices(vol.shape))
    by_hand = (HAND_FIRST + np.outer(kk * HAND_STEP, HAND_NORMAL)
               + np.outer(cc * dc, HAND_ROW_DIR) + np.outer(rr * dr, HAND_COL_DIR))
    np.testing.assert_allclose(vol.voxel_to_patient(np.c_[kk, rr, cc]), by_hand, atol=1e-6)
    # e.g. the last pixel of the first row is 8 columns * 0.8 mm along row_dir from the corner
    np.testing.assert_allclose(vol.voxel_to_patient((0, 0, 8)), [-12.5 + 5.12, 30.25 + 3.84, -47.0], atol=1e-6)
    np.testing.assert_allclose(vol.voxel_to_patient((0, 5, 0)), [-12.5 - 1.26, 30.25 + 1.68, -47.0 + 2.8],
                               atol=1e-6)
    for k, label in enumerate(vol.files):
        ipp = [float(v) for v in pydicom.dcmread(label, stop_before_pixels=True).ImagePositionPatient]
        np.testing.assert_allclose(vol.voxel_to_patient((k, 0, 0)), ipp, atol=1e-6)

    # HU = stored * slope + intercept, with rows and columns where the pixel data put them
    assert vol.hu.dtype == np.int16
    np.testing.assert_array_equal(vol.hu, _hand_stored() * HAND_SLOPE + HAND_INTERCEPT)
    mark_hu = HAND_MARK_STORED * HAND_SLOPE + HAND_INTERCEPT
    assert np.argwhere(vol.hu == mark_hu).tolist() == [list(HAND_MARK)]
    k, r, c = HAND_MARK
    where = HAND_FIRST + k * HAND_STEP * HAND_NORMAL + c * dc * HAND_ROW_DIR + r * dr * HAND_COL_DIR
    np.testing.assert_allclose(vol.voxel_to_patient(HAND_MARK), where, atol=1e-6)
    np.testing.assert_allclose(vol.patient_to_voxel(where), HAND_MARK, atol=1e-6)


def test_pydicom_ct_small_against_pydicom(tmp_path: Path) -> None:
    """pydicom's own CT test slice (a real scanner's, 128 x 128), checked against what pydicom reads."""
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm", download=False)  # shipped inside the pydicom wheel
    if source is None:
        pytest.skip("pydicom's bundled CT_small.dcm is not installed (it is never downloaded here)")
    ds = pydicom.dcmread(source)
    path = Path(shutil.copy(source, tmp_path / "ct_small.dcm"))
    vol = load_ct(path)

    assert vol.shape == (1, int(ds.Rows), int(ds.Columns)) and vol.series_uid == str(ds.SeriesInstanceUID)
    expected_hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.hu[0].astype(np.float64), expected_hu)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    np.testing.assert_allclose(vol.spacing, (float(ds.SliceThickness), row_spacing, col_spacing), atol=1e-6)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    for r, c in [(0, 0), (0, 127), (127, 0), (40, 90)]:
        np.testing.assert_allclose(vol.voxel_to_patient((0, r, c)),
                                   ipp + iop[:3] * c * col_spacing + iop[3:] * r * row_spacing, atol=1e-5)
    # the brightest pixel of the file is the brightest voxel of the volume, at the same row and column
    r, c = np.unravel_index(int(np.argmax(ds.pixel_array)), ds.pixel_array.shape)
    assert np.unravel_index(int(np.argmax(vol.hu[0])), vol.hu[0].shape) == (r, c)


# --------------------------------------------------------------------------- 3. rescale and pixel representation


@pytest.mark.parametrize(
    ("pixel_rep", "bits_stored", "slope", "intercept", "low", "high", "dtype"),
    [
        (0, 16, 1, -1024, 0, 3025, np.int16),  # unsigned storage, the common scanner layout
        (0, 16, 1, -32768, 0, 65536, np.int16),  # unsigned values above 32767 must not wrap
        (1, 16, 0.5, -1024, -2000, 6000, np.float32),  # non-integer slope
        (1, 16, 1, -1024.5, 0, 3000, np.float32),  # non-integer intercept
        (1, 16, 2, -1000, -500, 1000, np.int16),  # integer slope other than 1
        (1, 12, 1, 0, -2048, 2048, np.int16),  # 12-bit signed goes through pydicom's decoder
    ],
)
def test_rescale_and_pixel_representation(
        tmp_path: Path, pixel_rep: int, bits_stored: int, slope: float, intercept: float,
        low: int, high: int, dtype: type) -> None:
    paths = _write(tmp_path)
    rng = np.random.default_rng(11)
    stored = rng.integers(low, high, size=SHAPE)
    stored[0, 0, 0], stored[-1, -1, -1] = low, high - 1
    storage = "<u2" if pixel_rep == 0 else "<i2"

    def restore(ds: pydicom.Dataset, k: int) -> None:
        ds.PixelRepresentation = pixel_rep
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = stored[k].astype(storage).tobytes()

    for k, p in enumerate(paths):
        _edit(p, lambda ds, k=k: restore(ds, k))
    vol = load_ct(tmp_path)
    assert vol.hu.dtype == dtype
    np.testing.assert_allclose(vol.hu.astype(np.float64), stored * slope + intercept, atol=1e-3)
    np.testing.assert_allclose(vol.affine, _expected_affine(), atol=1e-9)


# --------------------------------------------------------------------------- 4. compression


def test_rle_loads_like_uncompressed(tmp_path: Path) -> None:
    hu = _hu(4)
    rle = _write(tmp_path / "rle", hu, compression="rle")
    _write(tmp_path / "raw", hu)
    assert all(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == RLELossless for p in rle)
    a, b = load_ct(tmp_path / "rle"), load_ct(tmp_path / "raw")
    assert a.hu.dtype == b.hu.dtype == np.int16
    np.testing.assert_array_equal(a.hu, hu)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-12)


# --------------------------------------------------------------------------- 5. inputs


def test_zip_with_readme_loads(series: tuple[Path, np.ndarray, list[Path]], tmp_path: Path) -> None:
    _, hu, paths = series
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("README.txt", "Exported from PACS.\n")
        for p in reversed(paths):
            zf.write(p, f"DICOM/ST1/{uuid.uuid4().hex}")
    vol = load_ct(archive)
    np.testing.assert_array_equal(vol.hu, hu)
    np.testing.assert_allclose(vol.affine, _expected_affine(), atol=1e-9)
    assert [f for f, _ in vol.skipped] == [f"{archive}!README.txt"]
    assert all(f.startswith(f"{archive}!DICOM/ST1/") for f in vol.files)
    assert list_series(archive)[0]["slices"] == SHAPE[0]


def test_explicit_file_list_loads(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    _, hu, paths = series
    shuffled = [paths[i] for i in np.random.default_rng(2).permutation(len(paths))]
    vol = load_ct([str(p) for p in shuffled[:5]] + shuffled[5:])
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.files == [str(p) for p in paths]
    # a list of part of the series is that part
    part = load_ct(paths[2:6])
    np.testing.assert_array_equal(part.hu, hu[2:6])
    np.testing.assert_allclose(part.voxel_to_patient([0, 0, 0]), [ORIGIN[0], ORIGIN[1], ORIGIN[2] + 2 * SPACING[0]])


def test_folder_with_other_files_skips_and_lists_them(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, hu, _ = series
    (folder / "README.txt").write_text("study notes")
    (folder / "report.json").write_text(json.dumps({"a": 1}))
    (folder / "thumbs").mkdir()
    (folder / "thumbs" / "thumb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    vol = load_ct(folder)
    np.testing.assert_array_equal(vol.hu, hu)
    skipped = {Path(f).name: why for f, why in vol.skipped}
    assert set(skipped) == {"README.txt", "report.json", "thumb.png"}
    assert all("not a DICOM file" in why for why in skipped.values())
    assert not any("README" in f for f in vol.files)


def test_explicit_non_dicom_file_is_an_error(series: tuple[Path, np.ndarray, list[Path]], tmp_path: Path) -> None:
    _, _, paths = series
    note = tmp_path / "notes.txt"
    note.write_text("not an image")
    with pytest.raises(DicomInputError, match="notes.txt"):
        load_ct(note)
    # named in a list it is an error too, not silently skipped
    with pytest.raises(DicomInputError, match="notes.txt"):
        load_ct([*paths, note])
    with pytest.raises(DicomInputError, match="missing.dcm"):
        load_ct(tmp_path / "missing.dcm")
    with pytest.raises(DicomInputError, match="missing.dcm"):
        load_ct([paths[0], tmp_path / "missing.dcm"])
    with pytest.raises(DicomInputError, match="no DICOM files given"):
        load_ct([])


def test_empty_or_text_only_folder_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DicomInputError, match="empty"):
        load_ct(empty)
    text = tmp_path / "text"
    text.mkdir()
    (text / "a.txt").write_text("a")
    (text / "b.csv").write_text("x,y\n1,2\n")
    with pytest.raises(DicomInputError, match="no DICOM files"):
        load_ct(text)
    with pytest.raises(DicomInputError, match="no DICOM files"):
        list_series(text)
    assert issubclass(DicomInputError, InputValidationError)


def test_truncated_dicom_is_an_error_naming_the_file(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, _, paths = series
    data = paths[4].read_bytes()
    paths[4].write_bytes(data[: len(data) - 700])  # header intact, pixel data cut short
    with pytest.raises(DicomInputError, match=r"slice0004\.dcm"):
        load_ct(folder)


def _media_export(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A CD-style export written by pydicom's FileSet: a DICOMDIR next to PT*/ST*/SE*/IM* files."""
    hu = _hu(8, (4, 16, 16))
    paths = _write(tmp_path / "src", hu)
    fs = FileSet()
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.StudyTime = "120000"  # the STUDY directory record needs it; write_ct_series leaves it out
        fs.add(ds)
    fs.write(tmp_path / "cd")
    assert (tmp_path / "cd" / "DICOMDIR").is_file()
    return tmp_path / "cd", hu


def test_dicomdir_next_to_the_images_is_skipped(tmp_path: Path) -> None:
    """The discovery docstring promises DICOMDIRs are skipped with a note, like README files."""
    folder, hu = _media_export(tmp_path)
    vol = load_ct(folder)
    np.testing.assert_array_equal(vol.hu, hu)
    assert [Path(f).name for f, _ in vol.skipped] == ["DICOMDIR"]


def test_list_series_leaves_out_the_dicomdir(tmp_path: Path) -> None:
    folder, _ = _media_export(tmp_path)
    found = list_series(folder)
    assert [(e["modality"], e["slices"]) for e in found] == [("CT", 4)]


# --------------------------------------------------------------------------- 6. several series


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, dict[str, tuple[str, np.ndarray]]]:
    """CT 10 slices, CT 6 slices and MR 12 slices (the most files) in one folder."""
    folder = tmp_path / "mixed"
    made = {}
    for name, modality, n, seed in [("ct_big", "CT", 10, 1), ("ct_small", "CT", 6, 2), ("mr", "MR", 12, 3)]:
        info = SeriesInfo(description=name)
        hu = _hu(seed, (n, 32, 32))
        paths = write_ct_series(hu, folder, spacing=SPACING, origin=ORIGIN, info=info)
        if modality == "MR":
            for p in paths:
                def to_mr(ds: pydicom.Dataset) -> None:
                    ds.Modality = "MR"
                    ds.SOPClassUID = MRImageStorage
                    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
                _edit(p, to_mr)
        made[name] = (info.series_uid, hu)
    return folder, made


def test_most_slices_ct_series_is_chosen(mixed: tuple[Path, dict[str, tuple[str, np.ndarray]]]) -> None:
    folder, made = mixed
    vol = load_ct(folder)
    uid, hu = made["ct_big"]
    assert vol.series_uid == uid and vol.description == "ct_big"
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.skipped == []


def test_series_uid_picks_another(mixed: tuple[Path, dict[str, tuple[str, np.ndarray]]]) -> None:
    folder, made = mixed
    uid, hu = made["ct_small"]
    vol = load_ct(folder, series_uid=uid)
    assert vol.series_uid == uid and vol.shape == (6, 32, 32)
    np.testing.assert_array_equal(vol.hu, hu)
    with pytest.raises(DicomInputError, match=r"Modality \(0008,0060\)"):
        load_ct(folder, series_uid=made["mr"][0])


def test_unknown_series_uid_lists_found(mixed: tuple[Path, dict[str, tuple[str, np.ndarray]]]) -> None:
    folder, made = mixed
    with pytest.raises(DicomInputError) as err:
        load_ct(folder, series_uid="1.2.3.4.5.999")
    msg = str(err.value)
    assert "1.2.3.4.5.999" in msg and "(0020,000E)" in msg
    for uid, _ in made.values():
        assert uid in msg


def test_mr_only_folder_is_an_error(tmp_path: Path, mixed: tuple[Path, dict[str, tuple[str, np.ndarray]]]) -> None:
    folder, made = mixed
    mr_only = tmp_path / "mr_only"
    mr_only.mkdir()
    mr_uid = made["mr"][0]
    for p in folder.iterdir():
        if str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == mr_uid:
            shutil.copy(p, mr_only / p.name)
    with pytest.raises(DicomInputError) as err:
        load_ct(mr_only)
    msg = str(err.value)
    assert "Modality (0008,0060)" in msg and "MR" in msg and mr_uid in msg


def test_list_series_reports_all(mixed: tuple[Path, dict[str, tuple[str, np.ndarray]]]) -> None:
    folder, made = mixed
    found = list_series(folder)
    assert [(e["description"], e["modality"], e["slices"]) for e in found] == [
        ("mr", "MR", 12), ("ct_big", "CT", 10), ("ct_small", "CT", 6)]
    assert {e["series_uid"] for e in found} == {uid for uid, _ in made.values()}
    assert all(Path(e["first_file"]).parent == folder for e in found)


# --------------------------------------------------------------------------- 7. damaged series


@pytest.mark.parametrize("how", ["deleted", "empty"])
def test_missing_position_names_file_and_tag(series: tuple[Path, np.ndarray, list[Path]], how: str) -> None:
    folder, _, paths = series
    if how == "deleted":
        _edit(paths[3], lambda ds: delattr(ds, "ImagePositionPatient"))
    else:
        _edit(paths[3], lambda ds: setattr(ds, "ImagePositionPatient", None))
    with pytest.raises(DicomInputError) as err:
        load_ct(folder)
    assert "slice0003.dcm" in str(err.value) and "(0020,0032)" in str(err.value)


@pytest.mark.parametrize("bad", [0, 5])  # the odd file first in name order, or in the middle
def test_mixed_orientation_names_file_and_tag(series: tuple[Path, np.ndarray, list[Path]], bad: int) -> None:
    folder, _, paths = series
    a = np.deg2rad(10)
    _edit(paths[bad], lambda ds: setattr(ds, "ImageOrientationPatient",
                                         [1.0, 0.0, 0.0, 0.0, float(np.cos(a)), float(np.sin(a))]))
    with pytest.raises(DicomInputError) as err:
        load_ct(folder)
    assert f"slice{bad:04d}.dcm" in str(err.value) and "(0020,0037)" in str(err.value)


def test_duplicate_position_is_an_error(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, _, paths = series
    shutil.copy(paths[4], folder / "copy_of_4.dcm")
    with pytest.raises(DicomInputError) as err:
        load_ct(folder)
    msg = str(err.value)
    assert "duplicate slice position" in msg and "(0020,0032)" in msg
    assert "slice0004.dcm" in msg and "copy_of_4.dcm" in msg


def test_missing_slice_is_an_error(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, _, paths = series
    paths[4].unlink()
    with pytest.raises(DicomInputError) as err:
        load_ct(folder)
    msg = str(err.value)
    assert "missing slice" in msg and "(0020,0032)" in msg
    assert "slice0005.dcm" in msg or "slice0003.dcm" in msg


def test_missing_slice_interpolated_on_request(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, hu, paths = series
    paths[4].unlink()
    vol = load_ct(folder, interpolate_missing=True)
    assert vol.shape == SHAPE
    assert vol.warnings and "missing slice" in vol.warnings[0]
    mean = (hu[3].astype(np.float64) + hu[5]) / 2
    assert np.max(np.abs(vol.hu[4] - mean)) <= 1.0
    np.testing.assert_array_equal(vol.hu[:4], hu[:4])
    np.testing.assert_array_equal(vol.hu[5:], hu[5:])
    np.testing.assert_allclose(vol.affine, _expected_affine(), atol=1e-9)


def test_two_missing_slices_interpolated_linearly(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, hu, paths = series
    paths[4].unlink()
    paths[5].unlink()
    with pytest.raises(DicomInputError, match="2 missing slice"):
        load_ct(folder)
    vol = load_ct(folder, interpolate_missing=True)
    assert vol.shape == SHAPE and vol.warnings
    a, b = hu[3].astype(np.float64), hu[6].astype(np.float64)
    assert np.max(np.abs(vol.hu[4] - (2 * a + b) / 3)) <= 1.0
    assert np.max(np.abs(vol.hu[5] - (a + 2 * b) / 3)) <= 1.0
    np.testing.assert_array_equal(vol.hu[6:], hu[6:])


@pytest.mark.parametrize("shift", [0.4, -0.4])
def test_irregular_spacing_is_an_error(series: tuple[Path, np.ndarray, list[Path]], shift: float) -> None:
    folder, _, paths = series
    z = ORIGIN[2] + 5 * SPACING[0] + shift * SPACING[0]
    _edit(paths[5], lambda ds: setattr(ds, "ImagePositionPatient", [ORIGIN[0], ORIGIN[1], z]))
    with pytest.raises(DicomInputError) as err:
        load_ct(folder, interpolate_missing=True)  # not a gap, so interpolation must not paper over it
    msg = str(err.value)
    assert "inconsistent slice spacing" in msg and "(0020,0032)" in msg
    assert "slice0005.dcm" in msg or "slice0006.dcm" in msg


def test_sheared_stack_is_an_error(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, _, paths = series
    for k, p in enumerate(paths):  # gantry tilt: x drifts 1 mm per slice
        _edit(p, lambda ds, k=k: setattr(ds, "ImagePositionPatient",
                                         [ORIGIN[0] + k, ORIGIN[1], ORIGIN[2] + k * SPACING[0]]))
    with pytest.raises(DicomInputError, match=r"sheared.*\(0020,0032\)"):
        load_ct(folder)


def test_pixel_spacing_mismatch_names_file(series: tuple[Path, np.ndarray, list[Path]]) -> None:
    folder, _, paths = series
    _edit(paths[6], lambda ds: setattr(ds, "PixelSpacing", [0.9, 0.9]))
    with pytest.raises(DicomInputError) as err:
        load_ct(folder)
    assert "slice0006.dcm" in str(err.value) and "(0028,0030)" in str(err.value)


# --------------------------------------------------------------------------- 8. phantom


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, CTVolume]:
    folder = tmp_path_factory.mktemp("phantom5")
    truth = write_phantom(folder, nodules=3, seed=5, shape=(40, 96, 96))
    return folder, truth, load_ct(folder)


def test_phantom_truth_matches_loaded_geometry(phantom: tuple[Path, dict, CTVolume]) -> None:
    folder, truth, vol = phantom
    assert json.loads((folder / "truth.json").read_text()) == truth
    assert vol.shape == (40, 96, 96) and vol.series_uid == truth["series_uid"]
    np.testing.assert_allclose(vol.spacing, truth["spacing_mm"], atol=1e-9)
    np.testing.assert_allclose(vol.voxel_to_patient([0, 0, 0]), truth["origin_mm"], atol=1e-9)
    assert [Path(f).name for f, _ in vol.skipped] == ["truth.json"]
    nodules = truth["nodules"]
    assert len(nodules) == 3 and [n["id"] for n in nodules] == [1, 2, 3]
    for n in nodules:
        np.testing.assert_allclose(vol.voxel_to_patient(n["center_kji"]), n["center_mm"], atol=1e-3)
        np.testing.assert_allclose(vol.patient_to_voxel(n["center_mm"]), n["center_kji"], atol=1e-3)
        assert 4.0 <= n["diameter_mm"] <= 30.0
        assert n["type"] in ("solid", "part-solid", "ground-glass") and n["type"] in NODULE_TYPES
        assert all(0 <= c < s for c, s in zip(n["center_kji"], vol.shape, strict=True))
        # the truth centre is inside the nodule: denser than lung
        k, j, i = np.round(n["center_kji"]).astype(int)
        assert vol.hu[k, j, i] > -700


def test_phantom_is_reproducible_by_seed(phantom: tuple[Path, dict, CTVolume], tmp_path: Path) -> None:
    _, truth, vol = phantom
    again = write_phantom(tmp_path / "again", nodules=3, seed=5, shape=(40, 96, 96))
    other = write_phantom(tmp_path / "other", nodules=3, seed=6, shape=(40, 96, 96))
    same = load_ct(tmp_path / "again")
    np.testing.assert_array_equal(same.hu, vol.hu)
    assert again["nodules"] == truth["nodules"]
    assert same.series_uid != vol.series_uid  # a new series, same pixels
    diff = load_ct(tmp_path / "other")
    assert diff.shape == vol.shape and not np.array_equal(diff.hu, vol.hu)
    assert other["nodules"] != truth["nodules"]


# --------------------------------------------------------------------------- 9. study discovery


def test_iter_study_dirs(tmp_path: Path) -> None:
    """Each sub-folder of the root is one study (its series sub-folders included), each zip in
    the root is one study, loose files at the root are not a study."""
    root = tmp_path / "root"
    small = _hu(0, (3, 8, 8))
    write_ct_series(small, root / "studyA", spacing=SPACING)
    write_ct_series(small, root / "studyB", spacing=SPACING)
    # one subfolder per series and no file of its own: still one study, the larger series chosen
    write_ct_series(small, root / "studyC" / "series1", spacing=SPACING)
    write_ct_series(_hu(1, (2, 8, 8)), root / "studyC" / "series2", spacing=SPACING)
    with zipfile.ZipFile(root / "top.zip", "w") as zf:
        for p in sorted((root / "studyA").iterdir()):
            zf.write(p, p.name)
    (root / "index.txt").write_text("files at the root are not a study")

    found = iter_study_dirs(root)
    assert found == sorted([root / "studyA", root / "studyB", root / "studyC", root / "top.zip"])
    shapes = {p.name: load_ct(p).shape for p in found}
    assert shapes["studyC"] == (3, 8, 8) and shapes["top.zip"] == (3, 8, 8)
    # a root that is itself one study folder
    assert iter_study_dirs(root / "studyA") == [root / "studyA"]

    with pytest.raises(InputValidationError, match=r"top\.zip: not a folder"):
        iter_study_dirs(root / "top.zip")
    with pytest.raises(InputValidationError, match=r"nowhere: not a folder"):
        iter_study_dirs(tmp_path / "nowhere")


# --------------------------------------------------------------------------- 10. Lung-RADS size table


@pytest.mark.parametrize(
    ("kind", "mean_d", "solid_d", "category"),
    [
        ("solid", 5.9, 0.0, "2"),
        ("solid", 5.94, 0.0, "2"),  # rounded to one decimal first
        ("solid", 5.96, 0.0, "3"),
        ("solid", 6.0, 0.0, "3"),
        ("solid", 7.9, 0.0, "3"),
        ("solid", 8.0, 0.0, "4A"),
        ("solid", 14.9, 0.0, "4A"),
        ("solid", 15.0, 0.0, "4B"),
        ("solid", 40.0, 0.0, "4B"),
        ("part-solid", 5.0, 3.0, "2"),
        ("part-solid", 12.0, 4.0, "3"),
        ("part-solid", 12.0, 5.9, "3"),
        ("part-solid", 12.0, 6.0, "4A"),
        ("part-solid", 12.0, 7.9, "4A"),
        ("part-solid", 12.0, 8.0, "4B"),
        ("ground-glass", 29.0, 0.0, "2"),
        ("ground-glass", 29.9, 0.0, "2"),
        ("ground-glass", 30.0, 0.0, "3"),
    ],
)
def test_lung_rads_category(kind: str, mean_d: float, solid_d: float, category: str) -> None:
    assert lung_rads_category(kind, mean_d, solid_d) == category
