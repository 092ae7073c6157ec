"""Chest CT: the torch lung mask and candidate path against the SciPy ones on real series and a phantom (equality, not speed).

    .venv/bin/python benchmarks/medical_imaging_equality.py --json benchmarks/results/medical_imaging_equality_cpu.json

For every series (default: the real ones staged under ../shared/data/medical-imaging, LIDC-IDRI-0003
and Lung-PET-CT-Dx A0002, and a generated 8-nodule phantom) the lungs are segmented with SciPy and
with torch (``lungs_torch``; the report says whether the masks are the same, voxel for voxel), candidates
are found with ``backend="scipy"`` and ``backend="torch"``, and the report says whether the lists
are the same: count, centres and radii exactly, the LoG response and blobness within the stated
tolerance (relative 1e-3, absolute 1e-3). The measurements start from the candidates, so equal
candidates give equal measurements. On the GPU machine ``--device cuda`` compares CUDA with SciPy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medical-imaging"
RTOL = 1e-3


def series_folders(root: Path) -> list[Path]:
    """Folders holding .dcm files (one series each), sorted."""
    return sorted({p.parent for p in root.rglob("*.dcm")})


def compare(vol, device: str | None) -> dict:
    from trillium.medical.imaging.candidates import find_candidates
    from trillium.medical.imaging.lungs import segment_lungs
    from trillium.medical.imaging.lungs_torch import segment_lungs_torch

    t = time.perf_counter()
    lungs = segment_lungs(vol.hu, vol.spacing)
    scipy_lungs_s = time.perf_counter() - t
    segment_lungs_torch(vol.hu, vol.spacing, device=device)  # a first call pays the device's start-up
    t = time.perf_counter()
    torch_lungs = segment_lungs_torch(vol.hu, vol.spacing, device=device)
    out: dict = {"shape": list(vol.shape), "spacing_mm": [round(s, 4) for s in vol.spacing],
                 "lung_ml": round(float(lungs.sum() * np.prod(vol.spacing) / 1000), 1),
                 "lungs_scipy_s": round(scipy_lungs_s, 3), "lungs_torch_s": round(time.perf_counter() - t, 3),
                 "lungs_equal": bool(np.array_equal(lungs, torch_lungs)),
                 "lungs_voxels_differing": int((lungs ^ torch_lungs).sum())}
    if not lungs.any():
        out["equal"] = out["lungs_equal"]
        out["note"] = "no lungs found (not a chest series)"
        return out
    t = time.perf_counter()
    ref = find_candidates(vol.hu, lungs, vol.spacing, backend="scipy")
    out["scipy_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    ours = find_candidates(vol.hu, lungs, vol.spacing, backend="torch", device=device)
    out["torch_s"] = round(time.perf_counter() - t, 3)
    out["candidates"] = {"scipy": len(ref), "torch": len(ours)}
    same_len = len(ref) == len(ours)
    centres = same_len and all(np.array_equal(a.center_kji, b.center_kji) and a.radius_mm == b.radius_mm
                               for a, b in zip(ours, ref, strict=True))
    if same_len and ref:
        resp = max(abs(a.response - b.response) / max(abs(b.response), 1.0) for a, b in zip(ours, ref, strict=True))
        blob = max(abs(a.blobness - b.blobness) for a, b in zip(ours, ref, strict=True))
        peak = max(abs(a.peak_hu - b.peak_hu) for a, b in zip(ours, ref, strict=True))
        out["max_rel_response_diff"], out["max_blobness_diff"], out["max_peak_hu_diff"] = resp, blob, peak
        out["equal"] = bool(centres and resp <= RTOL and blob <= RTOL and peak <= 1e-2 and out["lungs_equal"])
    else:
        out["equal"] = bool(same_len and centres and out["lungs_equal"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--device", default=None, help="torch device (default: CUDA when present)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from trillium.core.errors import TrilliumError
    from trillium.medical.imaging.dicom_io import load_ct
    from trillium.medical.imaging.phantom import make_phantom

    torch.set_num_threads(args.threads)
    report: dict = {"device": str(args.device or ("cuda" if torch.cuda.is_available() else "cpu")),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "tolerance": {"centres_and_radii": "exact", "response_rel": RTOL, "blobness_abs": RTOL,
                                  "peak_hu_abs": 1e-2}, "series": {}}
    root = Path(args.data)
    for folder in series_folders(root) if root.exists() else []:
        name = str(folder.relative_to(root))
        try:
            vol = load_ct(folder)
        except TrilliumError as exc:  # a series the loader refuses is reported, not compared
            report["series"][name] = {"error": str(exc)[:300]}
            continue
        report["series"][name] = compare(vol, args.device)
        print(name, report["series"][name], file=sys.stderr, flush=True)

    class _Vol:
        def __init__(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> None:
            self.hu, self.spacing, self.shape = hu, spacing, hu.shape

    hu, _ = make_phantom(8, 21, shape=(140, 256, 256), spacing=(1.5, 1.4, 1.4))
    report["series"]["phantom-seed21-140x256x256"] = compare(_Vol(hu, (1.5, 1.4, 1.4)), args.device)
    compared = [s for s in report["series"].values() if s.get("equal") is not None]
    report["all_equal"] = bool(compared) and all(s["equal"] for s in compared)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps({"all_equal": report["all_equal"], "compared": len(compared)}))


if __name__ == "__main__":
    main()
