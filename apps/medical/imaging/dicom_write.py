"""Writing a CT volume as a DICOM series: the phantoms, the tests and exports use it.

The reader (``dicom_io``) is the guarded way in for files from outside; this is the way out,
kept apart so that each module has one purpose. The series it writes is deliberately hard to
read wrongly (signed storage with a rescale, InstanceNumber against the array order, file names
that say nothing about the order), so a reader that cuts a corner fails visibly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

from trillium.core.errors import InputValidationError


@dataclass
class SeriesInfo:
    """Identity of a written series; UIDs are generated when not given."""

    patient_id: str = "PHANTOM"
    patient_name: str = "Phantom^Chest"
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    study_date: str = field(default_factory=lambda: date.today().strftime("%Y%m%d"))
    description: str = "Synthetic chest CT"
    accession: str = ""
    kernel: str = ""  # ConvolutionKernel (0018,1210); not written when empty


def write_ct_series(
    hu: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    spacing: Sequence[float],
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    info: SeriesInfo | None = None,
    compression: str | None = None,
    file_names: str = "uid",
) -> list[Path]:
    """Write ``hu`` ``[k, j, i]`` as an axial CT series (one file per slice); returns the paths.

    Stored values are signed 16-bit with RescaleIntercept -1024, so a reader that ignores the
    rescale or the sign is visibly wrong. ``compression="rle"`` writes RLE Lossless.
    ``file_names`` "uid" names files by SOP Instance UID (as PACS exports do, so order says
    nothing), "index" by slice number. InstanceNumber counts from the top (feet-last), the
    opposite of the array order, which a reader sorting by it would get wrong.
    """
    info = info or SeriesInfo()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sz, sy, sx = (float(v) for v in spacing)
    stored = np.clip(np.rint(hu).astype(np.int32) + 1024, -32768, 32767).astype(np.int16)
    n = stored.shape[0]
    paths = []
    for k in range(n):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "CT"
        ds.PatientName = info.patient_name
        ds.PatientID = info.patient_id
        ds.StudyInstanceUID = info.study_uid
        ds.SeriesInstanceUID = info.series_uid
        ds.FrameOfReferenceUID = info.frame_of_reference_uid
        ds.StudyDate = info.study_date
        ds.SeriesDate = info.study_date
        ds.StudyID = "1"
        ds.AccessionNumber = info.accession
        ds.SeriesNumber = 1
        ds.InstanceNumber = n - k
        ds.SeriesDescription = info.description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2]) + k * sz]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [sy, sx]
        ds.SliceThickness = sz
        if info.kernel:
            ds.ConvolutionKernel = info.kernel
        ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = -600
        ds.WindowWidth = 1500
        if compression == "rle":
            ds.compress(RLELossless, np.ascontiguousarray(stored[k]))
        elif compression is None:
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        else:
            raise InputValidationError(f"write_ct_series: compression {compression!r} is not one of None, 'rle'")
        name = f"{sop_uid}.dcm" if file_names == "uid" else f"slice{k:04d}.dcm"
        path = out / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


