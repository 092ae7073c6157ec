"""The one guarded way in for files that come from outside: uploads, archives, big headers.

Every path that takes a file from a user or another system (the dashboard's uploads, the CLI,
the batch jobs, the HTTP service) goes through here, so the same limits and the same refusals
apply everywhere:

- an upload is written under a name the application chooses (a random hex name and a suffix
  from an allow-list) inside a folder the application chooses; the client's file name is only
  ever a label, never a path. The write is atomic (a temporary file renamed into place), so a
  refused or interrupted upload leaves nothing behind;
- an archive is judged from its end-of-central-directory record before Python builds its
  member list (a zip of 100,000 members costs a few bytes of reading to refuse), then member by
  member: names that are absolute or climb out, too many members, declared sizes past the
  limits; reading then counts the bytes that actually come out, so a member whose header lies
  is cut off at the limit rather than trusted;
- decoders ask :func:`check_pixels` before allocating a frame from a header's dimensions
  (images, DICOM), and text is refused past a size cap before it is decoded.

Limits have defaults fit for the field (a CT series of 2,000 slices of 512 x 512 passes with room
to spare) and are set through the environment (``TRILLIUM_LIMIT_*``, see :class:`Limits`). Each
refusal is a :class:`LimitExceededError` or :class:`UnsafeNameError`, both
``InputValidationError``: the message names the file and the limit.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from trillium.core.errors import ConfigError, InputValidationError

__all__ = [
    "ArchiveMember",
    "LimitExceededError",
    "Limits",
    "UnsafeNameError",
    "check_pixels",
    "check_size",
    "iter_archive",
    "limits",
    "list_archive",
    "read_capped",
    "safe_member_name",
    "save_upload",
]

logger = logging.getLogger(__name__)

KiB, MiB, GiB = 1024, 1024**2, 1024**3
ENV_PREFIX = "TRILLIUM_LIMIT_"


class LimitExceededError(InputValidationError):
    """An input is larger than a configured limit; nothing was written or decoded."""

    def __init__(self, source: str, what: str, actual: int | str, limit_name: str, limit: int) -> None:
        self.source, self.what, self.actual, self.limit_name, self.limit = source, what, actual, limit_name, limit
        shown = f"{actual:,}" if isinstance(actual, int) else actual
        super().__init__(
            f"{source}: {what} is {shown}, above the limit of {limit:,} "
            f"({ENV_PREFIX}{limit_name.upper()} raises it if the file is trusted)"
        )


class UnsafeNameError(InputValidationError):
    """An archive member's name is absolute or climbs out of the folder it would be extracted to."""


@dataclass(frozen=True)
class Limits:
    """The sizes past which an input is refused. Each field reads ``TRILLIUM_LIMIT_<FIELD>``.

    Defaults, and why:
    - ``upload_bytes`` 4 GiB: one upload (a zipped CT study of 2,000 slices is about 1 GB
      uncompressed, less zipped);
    - ``archive_members`` 20,000: ten times a 2,000-slice series, far below the 100,000-member
      zips that exhaust memory just listing them;
    - ``archive_bytes`` 6 GiB: all members of one archive, expanded (2,000 slices of 1024 x 1024
      at 16 bits are 4.2 GB); ``member_bytes`` 1 GiB: one member, expanded;
    - ``image_pixels`` 50 M: a 7,000 x 7,000 line-scan frame passes, a 100,000 x 100,000 bomb not;
    - ``dicom_pixel_bytes`` 1 GiB: one DICOM object's frames (rows x columns x frames x samples
      x bytes per sample), e.g. an enhanced multi-frame CT of 2,000 frames of 512 x 512;
    - ``text_bytes`` 2,000,000: one clinical note (real ones are a few kB; a book is 1 MB);
    - ``request_bytes`` 64 MiB: one HTTP request to the service other than a CT study upload (a
      list of 100,000 transactions is about 20 MB of JSON; a 16-bit 4,096 x 4,096 TIFF 32 MB).
    """

    upload_bytes: int = 4 * GiB
    archive_members: int = 20_000
    archive_bytes: int = 6 * GiB
    member_bytes: int = 1 * GiB
    image_pixels: int = 50_000_000
    dicom_pixel_bytes: int = 1 * GiB
    text_bytes: int = 2_000_000
    request_bytes: int = 64 * MiB

    @classmethod
    def from_env(cls) -> Limits:
        """The defaults, with each ``TRILLIUM_LIMIT_<FIELD>`` (a positive integer) taken over."""
        values: dict[str, int] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = os.environ.get(name, "").strip().replace("_", "")
            if not raw:
                continue
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name}={os.environ[name]!r}: expected a positive integer") from None
            if value <= 0:
                raise ConfigError(f"{name}={value}: expected a positive integer")
            values[f.name] = value
        return cls(**values)


def limits() -> Limits:
    """The limits in force now (read from the environment on each call: cheap, and tests can set them)."""
    return Limits.from_env()


def check_size(source: str, what: str, actual: int, limit_name: str, lim: Limits | None = None) -> None:
    """Refuse ``actual`` past the limit ``limit_name`` of ``lim`` (the environment's by default)."""
    limit = getattr(lim or limits(), limit_name)
    if actual > limit:
        raise LimitExceededError(source, what, actual, limit_name, limit)


def check_pixels(source: str, rows: int, columns: int, *, frames: int = 1, samples: int = 1,
                 bytes_per_sample: int = 1, limit_name: str = "image_pixels", lim: Limits | None = None) -> None:
    """Refuse a header whose frame would be too big to allocate, before any decoder allocates it.

    ``image_pixels`` counts pixels (rows x columns x frames); ``dicom_pixel_bytes`` counts the
    bytes the decoded frames take.
    """
    for name, value in (("rows", rows), ("columns", columns), ("frames", frames), ("samples", samples)):
        if value <= 0:
            raise InputValidationError(f"{source}: the header declares {value} {name}; at least 1 is needed")
    count = rows * columns * frames
    if limit_name == "image_pixels":
        check_size(source, f"a frame of {columns} x {rows} x {frames} pixels", count, limit_name, lim)
    else:
        check_size(source, f"{columns} x {rows} x {frames} frames x {samples} samples x {bytes_per_sample} bytes",
                   count * samples * bytes_per_sample, limit_name, lim)


# --------------------------------------------------------------------------- uploads

_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")


def save_upload(data: bytes | BinaryIO, folder: str | os.PathLike[str], *, suffix: str, label: str,
                lim: Limits | None = None) -> Path:
    """Write an upload to ``folder`` under a fresh random name ending in ``suffix``; return the path.

    ``label`` is the client's name for the file: it appears in messages and logs only. The size
    is checked before anything is written, the bytes go to a temporary file in the same folder
    that is renamed into place once complete, so a refused, failed or interrupted upload leaves
    no file (half or whole) behind.
    """
    lim = lim or limits()
    suffix = suffix.lower()
    if not _SUFFIX.fullmatch(suffix):
        raise ValueError(f"suffix must look like '.zip' (lower-case letters and digits), got {suffix!r}")
    if isinstance(data, (bytes, bytearray, memoryview)):
        check_size(label, "the upload", len(data), "upload_bytes", lim)
        stream: BinaryIO = io.BytesIO(data)
    else:
        stream = data
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{uuid.uuid4().hex}{suffix}"
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".upload-", suffix=".part")
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(MiB):
                written += len(chunk)
                check_size(label, "the upload", written, "upload_bytes", lim)
                out.write(chunk)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("upload %r saved as %s (%d bytes)", label, target.name, written)
    return target


# --------------------------------------------------------------------------- archives

@dataclass(frozen=True)
class ArchiveMember:
    """One regular file of an archive, as listed (its size is what the header declares)."""

    name: str
    declared_bytes: int
    info: zipfile.ZipInfo


def safe_member_name(name: str, source: str) -> str:
    """``name`` as a relative POSIX path that stays inside the extraction folder, or refuse it.

    Refused: empty names, NUL bytes, absolute paths (``/x``, ``\\\\host\\x``, ``C:x``) and any
    ``..`` component, with either slash.
    """
    if not name or "\x00" in name:
        raise UnsafeNameError(f"{source}: archive member {name!r} has an empty name or a NUL byte")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix):
        raise UnsafeNameError(f"{source}: archive member {name!r} has an absolute path; members must be relative")
    parts = PurePosixPath(posix).parts
    if ".." in parts:
        raise UnsafeNameError(f"{source}: archive member {name!r} climbs out of the archive's folder ('..')")
    return posix


_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"


def _declared_member_count(fp: BinaryIO, source: str) -> int:
    """The member count the end-of-central-directory record declares, read from the file's tail.

    Reading it costs at most 64 kB, whatever the archive holds, so an archive of a million
    members is refused before ``zipfile`` builds a million ``ZipInfo`` objects.
    """
    fp.seek(0, os.SEEK_END)
    size = fp.tell()
    tail_len = min(size, 22 + 65535)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        raise InputValidationError(f"{source}: not a zip archive (no end-of-central-directory record)")
    total = struct.unpack("<H", tail[pos + 10:pos + 12])[0]
    if total == 0xFFFF and pos >= 20 and tail[pos - 20:pos - 16] == _ZIP64_LOCATOR:
        (eocd64_offset,) = struct.unpack("<Q", tail[pos - 12:pos - 4])
        fp.seek(eocd64_offset)
        record = fp.read(56)
        if len(record) == 56 and record[:4] == _ZIP64_EOCD:
            total = struct.unpack("<Q", record[32:40])[0]
    return total


def list_archive(archive: str | os.PathLike[str] | bytes, *, source: str | None = None,
                 lim: Limits | None = None) -> list[ArchiveMember]:
    """The regular-file members of a zip, refused as a whole when any limit or name check fails.

    Checked in this order, each before the next costs anything: the declared member count
    (from the tail record), then each member's name and declared size, then the declared total.
    Encrypted members are refused (nothing here could read them). Folders are left out.
    """
    lim = lim or limits()
    label = source or (str(archive) if not isinstance(archive, bytes) else "<upload>")
    fp: BinaryIO = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")  # noqa: SIM115
    try:
        count = _declared_member_count(fp, label)
        check_size(label, "the archive's member count", count, "archive_members", lim)
        fp.seek(0)
        try:
            zf = zipfile.ZipFile(fp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, struct.error) as exc:
            raise InputValidationError(f"{label}: not a readable zip archive ({type(exc).__name__}: {exc})") from exc
        with zf:
            infos = zf.infolist()
        check_size(label, "the archive's member count", len(infos), "archive_members", lim)
        members, total = [], 0
        for info in infos:
            name = safe_member_name(info.filename, label)
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise InputValidationError(f"{label}: archive member {name!r} is encrypted; upload it unencrypted")
            check_size(f"{label}!{name}", "the member's declared expanded size", info.file_size, "member_bytes", lim)
            total += info.file_size
            check_size(label, "the members' declared expanded size", total, "archive_bytes", lim)
            members.append(ArchiveMember(name, info.file_size, info))
        return members
    finally:
        fp.close()


def read_capped(stream: BinaryIO, *, source: str, what: str, limit_name: str, limit: int | None = None,
                lim: Limits | None = None) -> bytes:
    """Read ``stream`` to the end, refusing as soon as more than the limit comes out."""
    cap = limit if limit is not None else getattr(lim or limits(), limit_name)
    chunks, n = [], 0
    while chunk := stream.read(min(MiB, cap + 1 - n)):
        n += len(chunk)
        if n > cap:
            raise LimitExceededError(source, what, f"more than {cap:,} bytes", limit_name, cap)
        chunks.append(chunk)
    return b"".join(chunks)


def iter_archive(archive: str | os.PathLike[str] | bytes, *, source: str | None = None,
                 lim: Limits | None = None) -> Iterator[tuple[str, bytes]]:
    """(safe name, bytes) for each regular member, after :func:`list_archive` accepted the archive.

    The bytes that actually come out are counted against ``member_bytes`` and ``archive_bytes``
    as they are read, so a member whose header under-declares its size cannot go past the limits.
    A member that fails its CRC or is corrupt is refused with its name.
    """
    lim = lim or limits()
    label = source or (str(archive) if not isinstance(archive, bytes) else "<upload>")
    members = list_archive(archive, source=label, lim=lim)
    fp: BinaryIO = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")  # noqa: SIM115
    total = 0
    try:
        with zipfile.ZipFile(fp) as zf:
            for m in members:
                where = f"{label}!{m.name}"
                remaining = lim.archive_bytes - total
                cap = min(lim.member_bytes, remaining)
                name = "member_bytes" if cap == lim.member_bytes else "archive_bytes"
                try:
                    with zf.open(m.info) as stream:
                        data = read_capped(stream, source=where, what="the member, expanded", limit_name=name,
                                           limit=cap)
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
                    raise InputValidationError(f"{where}: corrupt archive member ({type(exc).__name__}: {exc})") from exc
                total += len(data)
                yield m.name, data
    finally:
        fp.close()
