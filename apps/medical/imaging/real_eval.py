"""The analyzer measured on real series against their readers' marks (``trillium medical real-eval``).

Per series: the lesions that count (at least ``min_readers`` readers and 3 mm, or boxes of
record), which findings hit them, which lesions were missed, and the **false findings**: findings
near no mark at all. A finding near a mark that does not count (one reader only, a sub-3 mm point,
a reader's non-nodule mark) is neither a hit nor false (LUNA16's "irrelevant findings").

A finding hits a lesion when its centre lies within the lesion's radius (at least ``min_radius_mm``,
so a small nodule is not missed by a voxel), as LUNA16 scores detections. Each lesion takes its
nearest finding; the errors reported are that finding's centre distance and its long axis
against the readers' median long axis (relative).

Any collection in these formats can be measured: the series folders are given, the marks are
found beside them (``annotations.marks_for``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trillium.medical.imaging.annotations import Lesion, keep, marks_for

log = logging.getLogger(__name__)


def match(findings: Sequence[dict[str, Any]], counted: Sequence[Lesion], ignored_points: Sequence[np.ndarray],
          *, min_radius_mm: float = 5.0) -> dict[str, Any]:
    """Findings (the analyzer's ``center_mm``, ``diameter_mm``) against lesions; see the module doc."""
    centres = np.array([f["center_mm"] for f in findings], np.float64).reshape(-1, 3)
    used: set[int] = set()
    per_lesion = []
    for les in counted:
        radius = max(les.diameter_mm / 2, min_radius_mm)
        d = np.linalg.norm(centres - les.centre_mm, axis=1) if len(centres) else np.zeros(0)
        near = [i for i in np.argsort(d) if d[i] <= radius]
        used.update(near)  # every finding inside a counted lesion is part of it, not a false finding
        hit = near[0] if near else None
        row: dict[str, Any] = {**les.as_dict(), "hit": hit is not None}
        if hit is not None:
            f = findings[hit]
            row.update(finding=int(f.get("id", hit + 1)), centre_error_mm=round(float(d[hit]), 2),
                       finding_diameter_mm=float(f["diameter_mm"]),
                       size_error=round((float(f["diameter_mm"]) - les.diameter_mm) / les.diameter_mm, 3)
                       if les.diameter_mm else None, findings_inside=len(near))
        per_lesion.append(row)
    false, ignored = [], []
    for i, f in enumerate(findings):
        if i in used:
            continue
        near_other = any(np.linalg.norm(centres[i] - p) <= max(min_radius_mm, r) for p, r in ignored_points)
        (ignored if near_other else false).append({"finding": int(f.get("id", i + 1)),
                                                    "center_mm": f["center_mm"], "diameter_mm": f["diameter_mm"],
                                                    "nodule_probability": f.get("nodule_probability")})
    return {"lesions": per_lesion, "hits": sum(r["hit"] for r in per_lesion),
            "missed": sum(not r["hit"] for r in per_lesion), "false_findings": false, "ignored_findings": ignored}


def evaluate_series(analyze: Callable[[Path], Any], series_dir: str | Path, *, min_readers: int = 2,
                    min_radius_mm: float = 5.0) -> dict[str, Any]:
    """Analyze one series and score it against its marks (LIDC XML inside, or VOC boxes beside)."""
    from trillium.medical.imaging.dicom_io import load_ct

    series_dir = Path(series_dir)
    t0 = time.perf_counter()
    result = analyze(series_dir)
    seconds = time.perf_counter() - t0
    volume = result.volume if getattr(result, "volume", None) is not None else load_ct(series_dir)
    lesions, fmt, points = marks_for(series_dir, volume)
    counted = keep(lesions, min_readers=min_readers)
    # marks that do not count, and the readers' non-nodule marks, still excuse a finding near
    # them (LUNA16's irrelevant findings)
    others: list[tuple[np.ndarray, float]] = [(les.centre_mm, les.diameter_mm / 2) for les in lesions
                                              if les not in counted] + [(p, 0.0) for p in points]
    scored = match(result.findings, counted, others, min_radius_mm=min_radius_mm)
    return {"series": str(series_dir), "series_uid": volume.series_uid, "patient_id": volume.patient_id, "format": fmt, "shape": list(volume.shape),
            "spacing_mm": [round(s, 3) for s in volume.spacing], "min_readers": min_readers,
            "counted_lesions": len(counted), "all_marked_lesions": len(lesions), "findings": len(result.findings),
            "n_candidates": getattr(result, "n_candidates", None), "seconds": round(seconds, 1), **scored}


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals over series: lesions found, false findings per series, centre and size errors."""
    hits = [les for r in rows for les in r["lesions"] if les["hit"]]
    n_lesions = sum(r["counted_lesions"] for r in rows)
    return {
        "series": len(rows), "lesions": n_lesions, "found": len(hits),
        "sensitivity": len(hits) / n_lesions if n_lesions else None,
        "false_findings_per_series": float(np.mean([len(r["false_findings"]) for r in rows])) if rows else None,
        "false_findings": [len(r["false_findings"]) for r in rows],
        "median_centre_error_mm": float(np.median([h["centre_error_mm"] for h in hits])) if hits else None,
        "max_centre_error_mm": float(max(h["centre_error_mm"] for h in hits)) if hits else None,
        "median_abs_size_error": float(np.median([abs(h["size_error"]) for h in hits if h["size_error"] is not None]))
        if hits else None,
    }


__all__ = ["evaluate_series", "match", "summarise"]
