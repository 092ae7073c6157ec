"""Readers' marks on real CT (LIDC-IDRI XML, Lung-PET-CT-Dx VOC boxes) and the scoring of
findings against them (``trillium medical real-eval``'s parts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_DATA, require_shared
from trillium.core.errors import InputValidationError
from trillium.medical.imaging.annotations import Lesion, keep, lesions_for, read_lidc, read_voc
from trillium.medical.imaging.dicom_io import load_ct
from trillium.medical.imaging.real_eval import match, summarise

IMAGING = SHARED_DATA / "medical-imaging"


@pytest.fixture(scope="module")
def lidc() -> tuple[Path, object]:
    root = require_shared(IMAGING / "lidc-idri" / "LIDC-IDRI-0003", "the LIDC-IDRI-0003 series")
    series = next(p for p in root.glob("*/*") if p.is_dir())
    return series, load_ct(series)


def test_lidc_readers_marks_group_into_the_published_nodules(lidc) -> None:
    series, volume = lidc
    lesions, fmt = lesions_for(series, volume)
    assert fmt == "lidc"
    four = [les for les in lesions if les.readers == 4]
    # the collection's description: nodules of about 13, 14 and 28 mm marked by all four readers
    assert sorted(round(les.diameter_mm) for les in four) == [13, 15, 30]
    assert all(len({m.reader for m in les.marks}) == 4 for les in four)
    # one reader's mark near the largest counts only under the loosest rule
    assert [les.readers for les in lesions if les not in four] == [1]
    assert len(keep(lesions, min_readers=3)) == len(keep(lesions, min_readers=2)) == 3
    assert len(keep(lesions, min_readers=1)) == 4
    # every centre lies inside the scan
    lo, hi = volume.voxel_to_patient([0, 0, 0]), volume.voxel_to_patient(np.array(volume.shape) - 1)
    for les in lesions:
        assert np.all(les.centre_mm >= np.minimum(lo, hi) - 1) and np.all(les.centre_mm <= np.maximum(lo, hi) + 1)
    marks, non_nodules = read_lidc(next(series.glob("*.xml")), volume)
    assert len({m.reader for m in marks}) == 4 and len(non_nodules) > 0


def test_voc_boxes_of_each_reconstruction_chain_into_the_tumour() -> None:
    patient = require_shared(IMAGING / "lung-pet-ct-dx" / "A0002", "the Lung-PET-CT-Dx patient A0002")
    sharp, soft = load_ct(patient / "series-B70f"), load_ct(patient / "series-B40f")
    a, fmt = lesions_for(patient / "series-B70f", sharp)
    b = read_voc(patient / "annotations", soft)
    assert fmt == "voc" and len(a) == len(b) == 1
    # one tumour of about 7-8 cm, boxes on 8 and 10 of the 30 slices: each series takes its own boxes
    assert 70 < a[0].diameter_mm < 85 and 70 < b[0].diameter_mm < 85
    assert (a[0].marks[0].slices, b[0].marks[0].slices) == (8, 10)
    assert np.linalg.norm(a[0].centre_mm - b[0].centre_mm) < 15  # the same tumour in both
    assert keep(a, min_readers=4) == a  # boxes of record count whatever the reader rule


def test_hostile_or_broken_annotation_files_are_refused_naming_the_file(tmp_path: Path, lidc) -> None:
    _, volume = lidc
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
                    '<LidcReadMessage>&b;</LidcReadMessage>')
    with pytest.raises(InputValidationError, match="bomb.xml: not a readable XML annotation file"):
        read_lidc(bomb, volume)
    other = tmp_path / "other.xml"
    other.write_text("<annotation/>")
    with pytest.raises(InputValidationError, match="other.xml: root element <annotation> is not an LIDC"):
        read_lidc(other, volume)
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / f"{volume.sop_instance_uids[3]}.xml").write_text("<annotation><object><name>A</name></object></annotation>")
    with pytest.raises(InputValidationError, match=r"\.xml: an <object> lacks a numeric <bndbox>"):
        read_voc(voc, volume)
    with pytest.raises(InputValidationError, match="no annotation found"):
        lesions_for(tmp_path / "nowhere", volume)


def _lesion(centre: list[float], diameter: float, readers: int | None = 4) -> Lesion:
    return Lesion("L", np.array(centre, float), diameter, readers)


def test_findings_are_hits_false_or_excused() -> None:
    counted = [_lesion([0, 0, 0], 20.0), _lesion([100, 0, 0], 4.0)]
    findings = [
        {"id": 1, "center_mm": [3, 4, 0], "diameter_mm": 18.0},    # 5 mm from the 20 mm lesion: a hit
        {"id": 2, "center_mm": [0, -8, 0], "diameter_mm": 6.0},    # inside the same lesion: part of it
        {"id": 3, "center_mm": [100, 6, 0], "diameter_mm": 4.0},   # 6 mm from the 4 mm nodule: outside 5 mm
        {"id": 4, "center_mm": [50, 50, 0], "diameter_mm": 5.0},   # near one reader's mark: excused
        {"id": 5, "center_mm": [-60, 0, 0], "diameter_mm": 7.0},   # near nothing: false
    ]
    res = match(findings, counted, [(np.array([52.0, 50, 0]), 3.0)])
    first, second = res["lesions"]
    assert first["hit"] and first["finding"] == 1 and first["centre_error_mm"] == 5.0
    assert first["size_error"] == pytest.approx(-0.1) and first["findings_inside"] == 2
    assert not second["hit"] and (res["hits"], res["missed"]) == (1, 1)
    assert [f["finding"] for f in res["false_findings"]] == [3, 5]
    assert [f["finding"] for f in res["ignored_findings"]] == [4]
    total = summarise([{"counted_lesions": 2, **res}])
    assert total["sensitivity"] == 0.5 and total["false_findings_per_series"] == 2.0
    assert total["median_centre_error_mm"] == 5.0
