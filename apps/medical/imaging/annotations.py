"""Radiologists' marks on real CT series, read into one shape: lesions with a centre, a size and
how many readers marked them.

Two formats, the two public collections' own:

- **LIDC-IDRI XML** (``read_lidc``): up to four readers' reads of a series; each reader's
  ``unblindedReadNodule`` has per-slice contours (``roi``: ``imageSOP_UID``, ``edgeMap`` pixel
  points, ``inclusion``) for nodules of 3 mm or more and a single point for smaller ones, and
  ``nonNodule`` marks other findings. ``group_lidc`` groups the readers' marks into lesions the
  way the LUNA16 challenge and pylidc do: marks of different readers whose centres lie within
  the larger mark's radius (at least ``min_distance_mm``) are one lesion, each reader at most once.
  ``Lesion.readers`` then says how many of the four agree; LUNA16 counts nodules of 3 mm or more
  marked by at least 3 of 4 (``min_readers=3``); "at least 2" is the looser convention.
- **PASCAL VOC boxes** (``read_voc``, Lung-PET-CT-Dx): one XML file per slice, named by that
  slice's SOPInstanceUID, with a box per lesion (``xmin ymin xmax ymax`` pixels). Boxes on
  consecutive slices whose in-plane boxes overlap are one lesion; the box files of other series
  (another reconstruction of the same acquisition) are ignored, matched by SOPInstanceUID.

Both need the ``CTVolume`` the marks were made on: contours name their slice by SOPInstanceUID,
and pixel points become patient millimetres through the volume's geometry. The XML comes from
outside: it is parsed with defusedxml (no entity expansion, no external entities), and a file
that is not what it claims is an ``InputValidationError`` naming the file and the element.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element  # nosec B405 # type only; parsing goes through defusedxml

import numpy as np
from defusedxml import ElementTree as SafeET

from trillium.core.errors import InputValidationError
from trillium.medical.imaging.dicom_io import CTVolume

log = logging.getLogger(__name__)

SMALL_NODULE_MM = 3.0
"""LIDC readers outline nodules of 3 mm or more; smaller ones are a single point."""


@dataclass
class ReaderMark:
    """One reader's mark of one lesion: its contour points in patient mm (LPS) per slice."""

    reader: str
    mark_id: str
    points_mm: np.ndarray  # (n, 3) x, y, z of every contour point (or the single point)
    slices: int  # how many slices carry a contour
    outlined: bool  # a contour (>= 3 mm nodule) rather than a single point
    malignancy: int | None = None

    @property
    def centre_mm(self) -> np.ndarray:
        return self.points_mm.mean(axis=0)

    @property
    def diameter_mm(self) -> float:
        """The longest in-plane extent of the contour on any slice (the calliper's long axis),
        or 0 for a point."""
        if not self.outlined:
            return 0.0
        best = 0.0
        for z in np.unique(self.points_mm[:, 2].round(3)):
            pts = self.points_mm[np.isclose(self.points_mm[:, 2], z, atol=1e-3)][:, :2]
            if len(pts) > 1:
                d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).max()
                best = max(best, float(d))
        return best


@dataclass
class Lesion:
    """A lesion as the readers marked it: one or more readers' marks grouped."""

    lesion_id: str
    centre_mm: np.ndarray  # mean of the readers' centres (LPS mm)
    diameter_mm: float  # median of the readers' long axes (boxes: the largest box's diagonal extent)
    readers: int | None  # None: one annotation of record (VOC boxes), not a count of readers
    marks: list[ReaderMark] = field(default_factory=list)
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"lesion_id": self.lesion_id, "centre_mm": [round(float(v), 2) for v in self.centre_mm],
                "diameter_mm": round(self.diameter_mm, 2), "readers": self.readers, "source": self.source}


def _parse(path: Path) -> Element:
    try:
        return SafeET.parse(str(path)).getroot()
    except (SafeET.ParseError, OSError, ValueError) as exc:  # DefusedXmlException is a ValueError
        raise InputValidationError(f"{path}: not a readable XML annotation file: {exc}") from exc


def _ns(root: Element) -> str:
    return root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""


def _slice_index(volume: CTVolume) -> dict[str, int]:
    if not volume.sop_instance_uids:
        raise InputValidationError(f"series {volume.series_uid}: no SOPInstanceUIDs read, marks cannot be placed")
    return {uid: k for k, uid in enumerate(volume.sop_instance_uids)}


def _to_mm(volume: CTVolume, k: int, xy: np.ndarray) -> np.ndarray:
    """Pixel points (x = column, y = row) on slice ``k`` to LPS mm."""
    kji = np.c_[np.full(len(xy), float(k)), xy[:, 1], xy[:, 0]]
    return volume.voxel_to_patient(kji)


def read_lidc(path: str | Path, volume: CTVolume) -> tuple[list[ReaderMark], list[np.ndarray]]:
    """Every reader's nodule marks in ``path`` (a LIDC XML of this series), and the non-nodule
    points (LPS mm). Contours on slices not in ``volume`` are an error naming them."""
    path = Path(path)
    root = _parse(path)
    ns = _ns(root)
    if not root.tag.endswith("LidcReadMessage"):
        raise InputValidationError(f"{path}: root element <{root.tag}> is not an LIDC <LidcReadMessage>")
    series = root.findtext(f"{ns}ResponseHeader/{ns}SeriesInstanceUid")
    if series and volume.series_uid and series.strip() != volume.series_uid:
        raise InputValidationError(f"{path}: marks series {series.strip()}, the volume is {volume.series_uid}")
    index = _slice_index(volume)
    marks: list[ReaderMark] = []
    others: list[np.ndarray] = []
    for r, session in enumerate(root.iter(f"{ns}readingSession")):
        reader = (session.findtext(f"{ns}servicingRadiologistID") or "").strip() or f"reader-{r + 1}"
        reader = f"{r + 1}:{reader}"  # the ids are not unique across sessions in every file
        for nod in session.findall(f"{ns}unblindedReadNodule"):
            mark_id = (nod.findtext(f"{ns}noduleID") or "").strip()
            pts, slices = [], 0
            for roi in nod.findall(f"{ns}roi"):
                if (roi.findtext(f"{ns}inclusion") or "TRUE").strip().upper() != "TRUE":
                    continue  # an excluded region (a hole) inside the outline
                uid = (roi.findtext(f"{ns}imageSOP_UID") or "").strip()
                if uid not in index:
                    raise InputValidationError(f"{path}: nodule {mark_id!r} of reader {reader}: imageSOP_UID "
                                               f"{uid!r} is not a slice of series {volume.series_uid}")
                try:
                    xy = np.array([[float(e.findtext(f"{ns}xCoord")), float(e.findtext(f"{ns}yCoord"))]
                                   for e in roi.findall(f"{ns}edgeMap")])
                except (TypeError, ValueError) as exc:
                    raise InputValidationError(f"{path}: nodule {mark_id!r}: an edgeMap lacks a number: {exc}") from exc
                if len(xy):
                    pts.append(_to_mm(volume, index[uid], xy))
                    slices += 1
            if not pts:
                continue
            allp = np.concatenate(pts)
            outlined = len(allp) > 1
            mal = nod.findtext(f"{ns}characteristics/{ns}malignancy")
            marks.append(ReaderMark(reader, mark_id, allp, slices, outlined,
                                    int(mal) if mal and mal.strip().isdigit() else None))
        for non in session.findall(f"{ns}nonNodule"):
            uid = (non.findtext(f"{ns}imageSOP_UID") or "").strip()
            x, y = non.findtext(f"{ns}locus/{ns}xCoord"), non.findtext(f"{ns}locus/{ns}yCoord")
            if uid in index and x and y:
                others.append(_to_mm(volume, index[uid], np.array([[float(x), float(y)]]))[0])
    return marks, others


def group_lidc(marks: Sequence[ReaderMark], *, min_distance_mm: float = 5.0, source: str = "") -> list[Lesion]:
    """The readers' marks grouped into lesions (greedy, largest marks first): a mark joins the
    nearest lesion whose centre lies within the larger of their radii (and at least
    ``min_distance_mm``) and which that reader has not marked yet."""
    order = sorted(marks, key=lambda m: -m.diameter_mm)
    groups: list[list[ReaderMark]] = []
    for m in order:
        best, best_d = None, np.inf
        for g in groups:
            if any(o.reader == m.reader for o in g):
                continue
            centre = np.mean([o.centre_mm for o in g], axis=0)
            d = float(np.linalg.norm(centre - m.centre_mm))
            reach = max(min_distance_mm, max(o.diameter_mm for o in g) / 2, m.diameter_mm / 2)
            if d <= reach and d < best_d:
                best, best_d = g, d
        if best is None:
            groups.append([m])
        else:
            best.append(m)
    lesions = []
    for i, g in enumerate(sorted(groups, key=lambda g: (-len(g), -max(o.diameter_mm for o in g)))):
        sizes = [o.diameter_mm for o in g if o.outlined]
        lesions.append(Lesion(f"L{i + 1}", np.mean([o.centre_mm for o in g], axis=0),
                              float(np.median(sizes)) if sizes else 0.0, len(g), list(g), source))
    return lesions


def lidc_lesions(path: str | Path, volume: CTVolume) -> list[Lesion]:
    marks, _ = read_lidc(path, volume)
    return group_lidc(marks, source=str(path))


def read_voc(folder: str | Path, volume: CTVolume) -> list[Lesion]:
    """Lesions from per-slice VOC box files named by SOPInstanceUID (files of slices not in this
    series are skipped: the folder may hold another reconstruction's boxes too)."""
    folder = Path(folder)
    index = _slice_index(volume)
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise InputValidationError(f"{folder}: no VOC annotation files (*.xml)")
    boxes: list[tuple[int, str, np.ndarray]] = []  # (slice, class, [xmin, ymin, xmax, ymax])
    for f in files:
        k = index.get(f.stem)
        if k is None:
            continue
        root = _parse(f)
        if root.tag != "annotation":
            raise InputValidationError(f"{f}: root element <{root.tag}> is not a VOC <annotation>")
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            try:
                b = np.array([float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")])  # type: ignore[union-attr]
            except (AttributeError, TypeError, ValueError) as exc:
                raise InputValidationError(f"{f}: an <object> lacks a numeric <bndbox> (xmin ymin xmax ymax)") from exc
            if b[2] <= b[0] or b[3] <= b[1]:
                raise InputValidationError(f"{f}: empty box {b.tolist()}")
            boxes.append((k, (obj.findtext("name") or "").strip(), b))
    if not boxes:
        log.warning("%s: no box file matches a slice of series %s", folder, volume.series_uid)
        return []
    return _chain_boxes(boxes, volume, str(folder))


def _chain_boxes(boxes: list[tuple[int, str, np.ndarray]], volume: CTVolume, source: str) -> list[Lesion]:
    """Boxes of one class on consecutive slices that overlap in plane are one lesion."""
    chains: list[list[tuple[int, np.ndarray]]] = []
    classes: list[str] = []
    for k, name, b in sorted(boxes, key=lambda t: t[0]):
        for chain, cls in zip(chains, classes, strict=True):
            last_k, last_b = chain[-1]
            overlap = not (b[2] < last_b[0] or b[0] > last_b[2] or b[3] < last_b[1] or b[1] > last_b[3])
            if cls == name and k - last_k == 1 and overlap:
                chain.append((k, b))
                break
        else:
            chains.append([(k, b)])
            classes.append(name)
    sy, sx = volume.spacing[1], volume.spacing[2]
    out = []
    for i, chain in enumerate(chains):
        centres = np.array([[k, (b[1] + b[3]) / 2, (b[0] + b[2]) / 2] for k, b in chain])
        long_axis = max(max((b[2] - b[0]) * sx, (b[3] - b[1]) * sy) for _, b in chain)
        corners = np.concatenate([_to_mm(volume, k, np.array([[b[0], b[1]], [b[2], b[3]]])) for k, b in chain])
        centre = np.asarray(volume.voxel_to_patient(centres.mean(axis=0)), np.float64).reshape(-1, 3)[0]
        out.append(Lesion(f"B{i + 1}", centre, float(long_axis), None,
                          [ReaderMark("boxes", classes[i] or f"B{i + 1}", corners, len(chain), True)], source))
    return out


def lidc_file(series_dir: str | Path) -> Path | None:
    """The LIDC XML inside a series folder, if there is one."""
    for xml in sorted(Path(series_dir).glob("*.xml")):
        try:
            if _parse(xml).tag.endswith("LidcReadMessage"):
                return xml
        except InputValidationError:
            continue
    return None


def annotation_source(series_dir: str | Path) -> tuple[str, Path] | None:
    """Where a series folder's marks are, without reading them: ("lidc", the XML inside it) or
    ("voc", an ``annotations`` folder in it or beside it); None when it has none."""
    series_dir = Path(series_dir)
    xml = lidc_file(series_dir)
    if xml is not None:
        return "lidc", xml
    for ann in (series_dir / "annotations", series_dir.parent / "annotations"):
        if ann.is_dir():
            return "voc", ann
    return None


def marks_for(series_dir: str | Path, volume: CTVolume) -> tuple[list[Lesion], str, list[np.ndarray]]:
    """The marks of a series folder, whichever format it carries (``annotation_source``):
    (lesions, format, the readers' non-nodule points, LPS mm; none for VOC). The XML is read once."""
    source = annotation_source(series_dir)
    if source is None:
        raise InputValidationError(f"{series_dir}: no annotation found (an LIDC XML in the folder, or a VOC "
                                   f"'annotations' folder in it or beside it)")
    fmt, path = source
    if fmt == "lidc":
        marks, points = read_lidc(path, volume)
        return group_lidc(marks, source=str(path)), fmt, points
    return read_voc(path, volume), fmt, []


def lesions_for(series_dir: str | Path, volume: CTVolume) -> tuple[list[Lesion], str]:
    """The lesions of a series folder and their format (``marks_for`` without the points)."""
    lesions, fmt, _ = marks_for(series_dir, volume)
    return lesions, fmt


def keep(lesions: Iterable[Lesion], *, min_readers: int, min_diameter_mm: float = SMALL_NODULE_MM) -> list[Lesion]:
    """The lesions a figure counts: at least ``min_readers`` readers (boxes of record always
    count) and ``min_diameter_mm``."""
    return [les for les in lesions if (les.readers is None or les.readers >= min_readers)
            and les.diameter_mm >= min_diameter_mm]


__all__ = ["Lesion", "ReaderMark", "annotation_source", "group_lidc", "keep", "lesions_for", "lidc_file", "lidc_lesions", "marks_for", "read_lidc", "read_voc"]
