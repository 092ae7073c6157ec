"""Nodule findings out as DICOM SEG + Comprehensive 3D SR, read back with pydicom and highdicom.

The CT is written by ``write_ct_series`` with files named by UID and InstanceNumber running
opposite to the array, so a mask that lands on the right slices proves the export follows the
volume's slice order and the SEG's per-frame source references, not file names or numbering.
"""

from __future__ import annotations

import sys

import numpy as np
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from tests.conftest import require_module
from trillium.core.errors import ConfigError, InputValidationError
from trillium.medical.imaging.dicom_export import (
    LUNG_RADS,
    MALIGNANCY_PROBABILITY,
    PRIVATE_SCHEME,
    export_findings,
    write_seg,
    write_sr,
)
from trillium.medical.imaging.dicom_io import load_ct
from trillium.medical.imaging.dicom_write import SeriesInfo, write_ct_series

hd = require_module("highdicom", "dicom-export")  # an optional extra; in [dev], so `make test` requires it

SHAPE = (12, 64, 64)
SPACING = (2.0, 0.7, 0.7)  # (slice, row, column) mm
ORIGIN = (-22.4, -30.1, -110.0)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 12 x 64 x 64 CT with one bright sphere, and two findings with their masks."""
    root = tmp_path_factory.mktemp("ct")
    k, j, i = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    hu = np.full(SHAPE, -850, dtype=np.int16)
    # Sphere 1 (radius ~4.2 mm) around (k, j, i) = (5, 30, 26), made lopsided in k with an
    # extra voxel run on slice 7 so a slice-order flip would not map it onto itself.
    d1 = ((k - 5) * SPACING[0]) ** 2 + ((j - 30) * SPACING[1]) ** 2 + ((i - 26) * SPACING[2]) ** 2
    mask1 = d1 <= 4.2 ** 2
    mask1[7, 30, 24:29] = True
    hu[mask1] = 40
    # Finding 2: a small ground-glass patch on slices 9-10, away from the sphere.
    mask2 = np.zeros(SHAPE, dtype=bool)
    mask2[9:11, 45:49, 10:15] = True
    hu[mask2] = -550
    info = SeriesInfo(patient_id="EXPORT-1", patient_name="Export^Test")
    write_ct_series(hu, root / "series", spacing=SPACING, origin=ORIGIN, info=info)
    volume = load_ct(root / "series")
    findings = []
    for fid, mask, kind, cat, diam, malig in ((1, mask1, "solid", "3", 8.4, 0.31), (2, mask2, "ground-glass", "2", 3.5, 0.04)):
        center_kji = np.argwhere(mask).mean(axis=0)
        findings.append({
            "id": fid,
            "center_mm": [round(float(v), 3) for v in volume.voxel_to_patient(center_kji)],
            "center_kji": [round(float(v), 2) for v in center_kji],
            "diameter_mm": diam,
            "volume_mm3": round(float(mask.sum()) * float(np.prod(SPACING)), 2),
            "malignancy": malig,
            "malignancy_std": 0.05,
            "nodule_probability": 0.93,
            "type": kind,
            "category": cat,
        })
    out = export_findings(volume, findings, [mask1, mask2], root / "out")
    return {"root": root, "volume": volume, "findings": findings, "masks": [mask1, mask2], "out": out}


def test_seg_reads_back_with_masks_on_the_right_slices(case):
    volume, masks = case["volume"], case["masks"]
    assert set(case["out"]) == {"seg", "sr"}
    ds = pydicom.dcmread(case["out"]["seg"])
    assert ds.SOPClassUID == SegmentationStorage
    assert ds.StudyInstanceUID == volume.study_uid
    assert ds.FrameOfReferenceUID == volume.frame_of_reference_uid
    assert ds.SeriesNumber == 900 and ds.SeriesDescription == "Trillium nodule segmentation"
    assert ds.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Nodule 1", "Nodule 2"]
    seg1 = ds.SegmentSequence[0]
    assert seg1.SegmentAlgorithmType == "AUTOMATIC"
    assert seg1.SegmentAlgorithmName == "trillium nodule analysis"
    assert seg1.SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"  # SCT Nodule
    # Empty frames are omitted: one frame per (slice, segment) that has voxels.
    expected_frames = sum(int(m.any(axis=(1, 2)).sum()) for m in masks)
    assert int(ds.NumberOfFrames) == expected_frames
    referenced = {fr.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for fr in ds.PerFrameFunctionalGroupsSequence}
    touched = {volume.sop_instance_uids[k] for m in masks for k in np.flatnonzero(m.any(axis=(1, 2)))}
    assert referenced == touched

    seg = hd.seg.segread(case["out"]["seg"])
    assert seg.number_of_segments == 2
    # highdicom's source-image mapping: one plane per CT instance, in the volume's slice order.
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=volume.sop_instance_uids,
                                               segment_numbers=[1, 2], assert_missing_frames_are_empty=True)
    assert pixels.shape == (*volume.shape, 2)
    assert np.array_equal(pixels[..., 0].astype(bool), masks[0])
    assert np.array_equal(pixels[..., 1].astype(bool), masks[1])


def test_sr_holds_measurements_and_centres(case):
    volume, findings = case["volume"], case["findings"]
    ds = pydicom.dcmread(case["out"]["sr"])
    assert ds.SOPClassUID == Comprehensive3DSRStorage
    assert ds.StudyInstanceUID == volume.study_uid
    assert ds.PatientID == "EXPORT-1"
    assert ds.SeriesNumber == 901 and ds.SeriesDescription == "Trillium nodule report"
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME
    # Evidence: every CT slice and the SEG instance.
    evidence = {ref.ReferencedSOPInstanceUID for study in ds.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    seg_ds = pydicom.dcmread(case["out"]["seg"], stop_before_pixels=True)
    assert evidence == set(volume.sop_instance_uids) | {seg_ds.SOPInstanceUID}

    sr = hd.sr.srread(case["out"]["sr"])
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 2
    by_label = {g.tracking_identifier: g for g in groups}
    seg = hd.seg.segread(case["out"]["seg"])
    codes = pydicom.sr.codedict.codes
    for n, f in enumerate(findings):
        g = by_label[f"Nodule {f['id']}"]
        # The SR group and the SEG segment describe the same lesion: same tracking UID.
        assert g.tracking_uid == seg.get_segment_description(n + 1).tracking_uid
        roi = g.roi
        assert roi.graphic_type == hd.sr.GraphicTypeValues3D.POINT
        assert roi.frame_of_reference_uid == volume.frame_of_reference_uid
        np.testing.assert_allclose(roi.value[0], f["center_mm"], atol=1e-3)
        (diameter,) = g.get_measurements(name=codes.SCT.Diameter)
        assert diameter.value == pytest.approx(f["diameter_mm"]) and diameter.unit.value == "mm"
        (volume_mm3,) = g.get_measurements(name=codes.SCT.Volume)
        assert volume_mm3.value == pytest.approx(f["volume_mm3"]) and volume_mm3.unit.value == "mm3"
        malig = {(m.derivation.value if m.derivation else None): m.value
                 for m in g.get_measurements(name=MALIGNANCY_PROBABILITY)}
        assert malig == pytest.approx({None: f["malignancy"], codes.SCT.StandardDeviation.value: f["malignancy_std"]})
        (category,) = g.get_qualitative_evaluations(name=LUNG_RADS)
        assert category.value.value == f"LUNG-RADS-{f['category']}"


def test_no_findings_writes_only_the_sr(case, tmp_path):
    out = export_findings(case["volume"], [], [], tmp_path / "empty")
    assert set(out) == {"sr"}
    assert not (tmp_path / "empty" / "seg.dcm").exists()
    ds = pydicom.dcmread(out["sr"])
    assert ds.SOPClassUID == Comprehensive3DSRStorage
    assert ds.StudyInstanceUID == case["volume"].study_uid
    sr = hd.sr.srread(out["sr"])
    assert sr.content.get_planar_roi_measurement_groups() == []


def test_bad_inputs_are_named(case, tmp_path):
    volume, findings, masks = case["volume"], case["findings"], case["masks"]
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in volume.files]
    with pytest.raises(InputValidationError, match="shape"):
        write_seg(datasets, [masks[0][:-1], masks[1]], findings, tmp_path / "seg.dcm")
    with pytest.raises(InputValidationError, match="empty"):
        write_seg(datasets, [np.zeros_like(masks[0]), masks[1]], findings, tmp_path / "seg.dcm")
    with pytest.raises(InputValidationError, match="category"):
        write_sr(datasets, [{**findings[0], "category": "5"}], tmp_path / "sr.dcm")
    with pytest.raises(InputValidationError, match="Segmentation"):
        write_sr(datasets, findings, tmp_path / "sr.dcm", seg_path=volume.files[0])


def test_a_mass_is_written_with_its_4x_category(case, tmp_path):
    volume, findings = case["volume"], case["findings"]
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in volume.files]
    mass = {**findings[0], "kind": "mass", "diameter_mm": 41.0, "category": "4X"}
    write_sr(datasets, [mass], tmp_path / "sr.dcm")
    (group,) = hd.sr.srread(tmp_path / "sr.dcm").content.get_planar_roi_measurement_groups()
    (category,) = group.get_qualitative_evaluations(name=LUNG_RADS)
    assert category.value.value == "LUNG-RADS-4X"


def test_missing_highdicom_is_a_config_error(case, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)  # makes "import highdicom" raise ImportError
    with pytest.raises(ConfigError, match="highdicom"):
        export_findings(case["volume"], case["findings"], case["masks"], tmp_path / "x")
