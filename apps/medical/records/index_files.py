"""The saved similar-case index: its files, their sha256 manifest, and readers that never unpickle.

An index is data, never code. ``SimilarCaseIndex.save`` writes JSON, ``.npy`` and ``.npz`` files
plus ``manifest.json`` with each file's sha256; ``SimilarCaseIndex.load`` first checks every
digest (``verify_manifest``), then reads each file with ``allow_pickle=False`` and checks its
type and shape, so a modified, truncated or foreign file fails with its path and the reason.
``RetrievalError`` lives here, at the bottom of the index's modules, because every one of them
raises it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from trillium.core.errors import TrilliumError

__all__ = [
    "CONCEPT_FILES",
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_FILES",
    "MANIFEST",
    "RetrievalError",
    "read_csr",
    "read_json",
    "read_npy",
    "sha256_file",
    "verify_manifest",
]

FORMAT = "trillium.similar_case_index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Every file a saved index may hold; the manifest may name no other (no path leaves the folder).
INDEX_FILES = (
    "params.json",
    "note_ids.json",
    "vocabulary.json",
    "idf.npy",
    "doc_matrix.npz",
    "concept_vocabulary.json",
    "concept_idf.npy",
    "concept_matrix.npz",
)
CONCEPT_FILES = ("concept_vocabulary.json", "concept_idf.npy", "concept_matrix.npz")


class RetrievalError(TrilliumError):
    """The index is missing, corrupt or tampered with, or a fit/query argument is invalid."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_manifest(d: Path) -> dict[str, str]:
    """Check that every file the manifest lists exists and has its recorded sha256."""
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise RetrievalError(f"{mpath}: missing; {d} is not a saved similar-case index (or the save did not finish)")
    manifest = read_json(d, MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != FORMAT:
        raise RetrievalError(f"{mpath}: not a similar-case index manifest")
    for name, digest in files.items():
        if name not in INDEX_FILES:  # also rules out paths outside the directory
            raise RetrievalError(f"{mpath}: unexpected file name {name!r}")
        path = d / name
        if not path.is_file():
            raise RetrievalError(f"{path}: missing (listed in {MANIFEST})")
        actual = sha256_file(path)
        if actual != digest:
            raise RetrievalError(
                f"{path}: sha256 {actual[:12]}... differs from the manifest's "
                f"{str(digest)[:12]}...: the file was modified or corrupted"
            )
    return files


def read_json(d: Path, name: str) -> Any:
    try:
        return json.loads((d / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RetrievalError(f"{d / name}: unreadable JSON: {exc}") from exc


def read_npy(d: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.load(d / name, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RetrievalError(f"{d / name}: unreadable array: {exc}") from exc
    if arr.shape != shape or arr.dtype != np.float64:
        raise RetrievalError(f"{d / name}: expected float64 {shape}, got {arr.dtype} {arr.shape}")
    return arr


def read_csr(d: Path, name: str, shape: tuple[int, int]) -> sp.csr_matrix:
    """A CSR matrix from a ``scipy.sparse.save_npz`` file, read with ``allow_pickle=False``."""
    try:
        with np.load(d / name, allow_pickle=False) as z:
            fmt = z["format"].item()
            fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
            if fmt != "csr":
                raise RetrievalError(f"{d / name}: expected a CSR matrix, got format {fmt!r}")
            m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(int(x) for x in z["shape"]))
            m.check_format(full_check=True)  # index bounds: a bad file must fail here, not inside scipy
    except RetrievalError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise RetrievalError(f"{d / name}: unreadable sparse matrix: {exc}") from exc
    if m.shape != shape:
        raise RetrievalError(f"{d / name}: shape {m.shape} does not match {shape} (notes x terms)")
    if m.dtype != np.float64:
        raise RetrievalError(f"{d / name}: expected float64 values, got {m.dtype}")
    return m
