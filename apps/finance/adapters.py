"""Finance data adapters: external transaction formats -> canonical records, with quarantine.

A format is a ``ColumnMapping`` (which source column holds each canonical field, how the
timestamp is given, which other columns to keep); ``PROFILES`` holds the ready ones and
``detect_format`` picks one from the column names. ``normalize`` turns one frame (a whole file
or one chunk of a batch job) into (valid canonical rows, quarantined raw rows with a
``reason``), fully vectorized, so it is cheap enough to run on every chunk of a batch job.

Two ways in:

* ``read_transactions`` reads a whole Parquet / CSV file or SQL table and normalizes it.
* ``transaction_source`` gives the core engine's ``Source`` for the same inputs, for a batch job
  that calls ``normalize`` per chunk (the engine sets each chunk's index to the global input row
  numbers, which the quarantine keeps).

Input may arrive typed (Parquet, SQL) or as strings (``CsvSource`` reads every CSV value as a
string so one bad value cannot fail a chunk); ``normalize`` accepts both.
"""

from __future__ import annotations

import csv
import logging
import lzma
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Select, inspect

from trillium.core.db import Database
from trillium.core.errors import InputValidationError, JobError
from trillium.core.jobs import DEFAULT_CHUNK_ROWS, CsvSource, ParquetSource, Source, SqlSource, split_valid
from trillium.finance.records import AMOUNT, CANONICAL, CUSTOMER_ID, LABEL, TERMINAL_ID, TIMESTAMP, TRANSACTION_ID

__all__ = [
    "PROFILES",
    "ULB_FEATURES",
    "ColumnMapping",
    "detect_format",
    "normalize",
    "read_transactions",
    "transaction_source",
    "write_transactions",
]

logger = logging.getLogger(__name__)

IdDtype = Literal["auto", "int64", "str"]
Target = str | os.PathLike[str] | Engine | Database

_UNIT_NS = {"D": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_NS_MIN, _NS_MAX = pd.Timestamp.min.value, pd.Timestamp.max.value
_INT_ID = r"[+-]?(?:0|[1-9][0-9]{0,17})(?:\.0*)?"  # RE2-friendly (no \d): runs in pyarrow; 18 digits fit int64
_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1, "genuine": 0, "fraud": 1}
_LABEL_CHOICES = "0, 1, true, false, fraud, genuine or empty"
_DETAIL_CHARS = 40  # raw values quoted in a reason are cut to this length


# --------------------------------------------------------------------------- mappings


@dataclass(frozen=True)
class ColumnMapping:
    """Where each canonical field comes from in one external format.

    ``None`` for ``transaction_id`` means the source has no id: the frame index (the global input
    row number in a batch job or ``read_transactions``) becomes the id. ``None`` for
    ``customer_id`` / ``terminal_id`` / ``label`` means the source has no such column: the
    canonical frame then has no customer / terminal column, and every label is unknown.

    ``timestamp_unit`` None: the column holds datetimes or ISO 8601 strings (or strings in
    ``timestamp_format``); else it holds numbers in that unit ("s", "ms", ...) counted from
    ``timestamp_origin`` (default the Unix epoch). ``rename`` keeps extra columns under new
    names whatever ``keep_extra`` says; ``keep_extra`` keeps every other unmapped column as read
    (minus ``drop``); ``numeric`` names extra columns that must be numbers (model features,
    e.g. ULB's V1..V28): they become float64 and a row with a missing or non-numeric value is
    quarantined. ``optional`` names the canonical fields whose source column may be absent from
    a file (a label is optional by default: files to score have none). ``id_dtype`` "auto" keeps
    ids int64 when every id in the frame is integral, else strings; pin it ("int64" or "str")
    so every chunk of a batch job gets the same dtype.
    """

    transaction_id: str | None = TRANSACTION_ID
    timestamp: str = TIMESTAMP
    customer_id: str | None = CUSTOMER_ID
    terminal_id: str | None = TERMINAL_ID
    amount: str = AMOUNT
    label: str | None = LABEL
    timestamp_unit: str | None = None
    timestamp_origin: str | None = None
    timestamp_format: str | None = None
    keep_extra: bool = True
    rename: tuple[tuple[str, str], ...] = ()
    drop: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    optional: frozenset[str] = frozenset({LABEL})
    id_dtype: IdDtype = "auto"
    name: str = "custom"

    def __post_init__(self) -> None:
        # Accept friendlier types, store hashable ones (the dataclass is frozen and hashable).
        if isinstance(self.rename, Mapping):
            object.__setattr__(self, "rename", tuple(self.rename.items()))
        object.__setattr__(self, "rename", tuple((str(a), str(b)) for a, b in self.rename))
        object.__setattr__(self, "drop", tuple(self.drop))
        object.__setattr__(self, "numeric", tuple(self.numeric))
        object.__setattr__(self, "optional", frozenset(self.optional))
        if self.timestamp_unit is not None and self.timestamp_unit not in _UNIT_NS:
            raise InputValidationError(
                f"mapping {self.name!r}: timestamp_unit must be None or one of {sorted(_UNIT_NS)}, "
                f"got {self.timestamp_unit!r}"
            )
        if self.timestamp_origin is not None:
            if self.timestamp_unit is None:
                raise InputValidationError(f"mapping {self.name!r}: timestamp_origin needs a timestamp_unit")
            try:
                pd.Timestamp(self.timestamp_origin)
            except (ValueError, TypeError) as exc:
                raise InputValidationError(
                    f"mapping {self.name!r}: timestamp_origin {self.timestamp_origin!r} is not a date: {exc}"
                ) from None
        if self.id_dtype not in ("auto", "int64", "str"):
            raise InputValidationError(f"mapping {self.name!r}: id_dtype must be auto, int64 or str")
        unknown = self.optional - {CUSTOMER_ID, TERMINAL_ID, LABEL}
        if unknown:
            raise InputValidationError(
                f"mapping {self.name!r}: only customer_id, terminal_id and label can be optional, got {sorted(unknown)}"
            )
        targets = [new for _, new in self.rename]
        clash = sorted(set(targets) & set(CANONICAL)) or sorted({t for t in targets if targets.count(t) > 1})
        if clash:
            raise InputValidationError(f"mapping {self.name!r}: rename targets {clash} clash with other columns")

    def fields_map(self) -> dict[str, str]:
        """Canonical field -> source column, for the fields this format has."""
        pairs = {
            TRANSACTION_ID: self.transaction_id,
            TIMESTAMP: self.timestamp,
            CUSTOMER_ID: self.customer_id,
            TERMINAL_ID: self.terminal_id,
            AMOUNT: self.amount,
            LABEL: self.label,
        }
        return {k: v for k, v in pairs.items() if v is not None}

    def required_columns(self) -> list[str]:
        """Source columns a frame must have (mapped non-optional fields and ``numeric`` extras)."""
        cols = [col for fld, col in self.fields_map().items() if fld not in self.optional]
        return list(dict.fromkeys([*cols, *self.numeric]))

    def present_fields(self, columns: Iterable[Any]) -> dict[str, str]:
        """Canonical field -> source column, for the mapped columns present in ``columns``."""
        have = set(columns)
        return {fld: col for fld, col in self.fields_map().items() if col in have}

    def validate_columns(self, columns: Iterable[Any], *, source: str = "<frame>") -> None:
        """Raise ``InputValidationError`` naming the missing columns, the file and the columns found."""
        found = list(columns)
        counts = pd.Series(found, dtype=object).value_counts() if found else pd.Series(dtype=object)
        repeated = [str(c) for c, k in counts.items() if k > 1]
        if repeated:  # Parquet allows it (CSV headers are renamed a, a.1 by pandas): one name, one column
            raise InputValidationError(
                f"{source}: column name(s) {sorted(repeated)} appear more than once; each column must be unique"
            )
        missing = [c for c in self.required_columns() if c not in set(found)]
        if missing:
            raise InputValidationError(
                f"{source}: missing column(s) {missing} for the {self.name!r} transaction format; "
                f"columns found: {_short_list(found)}"
            )
        mapped = set(self.fields_map().values()) | {old for old, _ in self.rename} | set(self.drop)
        if self.keep_extra:
            clash = [c for c in found if c in CANONICAL and c not in mapped]
            if clash:
                raise InputValidationError(
                    f"{source}: unmapped column(s) {clash} have canonical names and would clash with the "
                    f"{self.name!r} format's mapped columns; add them to the mapping's drop or rename"
                )


def _short_list(items: Sequence[Any], limit: int = 40) -> str:
    shown = [str(x) for x in items[:limit]]
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return "[" + ", ".join(shown) + more + "]"


ULB_FEATURES = tuple(f"V{i}" for i in range(1, 29))

PROFILES: dict[str, ColumnMapping] = {
    # Trillium's own columns (what write_transactions writes): identity; card-less data has no
    # customer/terminal column, so those are optional here.
    "canonical": ColumnMapping(
        optional=frozenset({CUSTOMER_ID, TERMINAL_ID, LABEL}),
        name="canonical",
    ),
    # The Fraud Detection Handbook's simulated transactions. TX_TIME_SECONDS / TX_TIME_DAYS
    # repeat TX_DATETIME and are dropped; the fraud scenario (0 genuine, 1-3 the injected
    # pattern) is kept as ground truth for evaluation.
    "handbook": ColumnMapping(
        transaction_id="TRANSACTION_ID",
        timestamp="TX_DATETIME",
        customer_id="CUSTOMER_ID",
        terminal_id="TERMINAL_ID",
        amount="TX_AMOUNT",
        label="TX_FRAUD",
        keep_extra=False,
        rename=(("TX_FRAUD_SCENARIO", "fraud_scenario"),),
        drop=("TX_TIME_SECONDS", "TX_TIME_DAYS"),
        name="handbook",
    ),
    # The ULB / Worldline credit-card set (Kaggle "creditcardfraud"): two days of September 2013
    # by European cardholders. ``Time`` is seconds since the first transaction; the set gives no
    # calendar date, so the origin is set to 2013-09-01 00:00:00 (day of week and hour of day
    # are therefore nominal). No transaction id (the row number stands in), no card, no
    # terminal; V1..V28 are PCA components, kept as float64 features.
    "ulb": ColumnMapping(
        transaction_id=None,
        timestamp="Time",
        customer_id=None,
        terminal_id=None,
        amount="Amount",
        label="Class",
        timestamp_unit="s",
        timestamp_origin="2013-09-01 00:00:00",
        keep_extra=True,
        numeric=ULB_FEATURES,
        name="ulb",
    ),
}


def detect_format(columns: Iterable[Any], *, source: str | None = None) -> str:
    """The name of the first profile (canonical, handbook, ulb) whose required columns are all
    present; ``InputValidationError`` listing what was seen when none fits."""
    found = list(columns)
    have = set(found)
    for name, mapping in PROFILES.items():
        if all(c in have for c in mapping.required_columns()):
            return name
    needs = "; ".join(f"{n}: {_short_list(m.required_columns(), 8)}" for n, m in PROFILES.items())
    where = f"{source}: " if source else ""
    raise InputValidationError(
        f"{where}cannot tell the transaction format from the columns {_short_list(found)}. "
        f"Known formats need: {needs}. Pass format= or a ColumnMapping."
    )


# --------------------------------------------------------------------------- vectorized parsing


def _show(value: Any) -> str:
    """``str(value)``; a Timestamp outside Python's datetime range (year < 1 or > 9999, which a
    Parquet timestamp in seconds can hold) cannot print itself, so its numpy value is shown."""
    try:
        return str(value)
    except (NotImplementedError, ValueError, OverflowError):
        asm8 = getattr(value, "asm8", None)
        return str(asm8) if asm8 is not None else f"<{type(value).__name__}>"


def _utc_naive(raw: pd.Series) -> pd.Series:
    """A zoned datetime column in UTC without its zone (other columns as they are): pandas cannot
    box or print a zoned time outside Python's datetime range (a Parquet timestamp in seconds can
    hold year 33658), a naive one it can."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").dt.tz_localize(None)
    return raw


def _quote(raw: pd.Series) -> pd.Series:
    """repr-like text of raw values for reason messages (only ever called on bad rows)."""
    try:
        text = raw.astype(object).map(_show)
    except (NotImplementedError, ValueError, OverflowError):  # a zoned time past year 9999
        text = _utc_naive(raw).astype(object).map(_show) + " UTC"
    return "'" + text.str.slice(0, _DETAIL_CHARS) + "'"


def _text(raw: pd.Series) -> pd.Series:
    """``raw.astype("str")``, except that bytes objects (a Parquet binary column) are decoded as
    UTF-8 with replacement characters (pandas raises ``UnicodeDecodeError`` on bytes that are not
    UTF-8) and zoned times pandas cannot print are shown in UTC: one such value must quarantine
    its row, not fail the file."""
    if isinstance(raw.dtype, pd.CategoricalDtype):  # a Parquet dictionary column, possibly of bytes
        raw = raw.astype(object)
    if raw.dtype == object:
        raw = raw.map(lambda v: v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v)
    try:
        return raw.astype("str")
    except (NotImplementedError, ValueError, OverflowError):  # a zoned time past year 9999
        return _utc_naive(raw).astype("str") + " UTC"


def _blank(raw: pd.Series) -> np.ndarray:
    """Missing: NA, or a string that is empty or whitespace."""
    missing = raw.isna().to_numpy()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        text = _text(raw)
        missing = missing | (text.str.strip() == "").fillna(False).to_numpy(dtype=bool)
    return missing


def _numbers(raw: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values, missing mask, unparseable mask) of a numeric or text column."""
    if pd.api.types.is_bool_dtype(raw.dtype) or (
        pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_complex_dtype(raw.dtype)
    ):
        values = raw.astype("float64").to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(values)
        return values, missing, np.zeros(len(raw), dtype=bool)
    missing = _blank(raw)
    if pd.api.types.is_string_dtype(raw.dtype) and raw.dtype != object:
        parsed = pd.to_numeric(raw.str.strip(), errors="coerce")
    else:  # object: Decimal (PostgreSQL NUMERIC), Python numbers, strings, None, mixed
        cleaned = raw.map(lambda v: v.strip() if isinstance(v, str) else v) if len(raw) else raw
        parsed = pd.to_numeric(cleaned, errors="coerce")
    values = pd.Series(parsed).astype("float64").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~missing & np.isnan(values)
    return values, missing, bad


def _ids(raw: pd.Series, mode: IdDtype) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """(canonical ids, missing mask, not-an-integer mask) of one id column.

    Integral ids become int64; others stay strings (stripped). The values of missing rows are
    placeholders (those rows are quarantined).
    """
    index = raw.index
    n = len(raw)
    none = np.zeros(n, dtype=bool)
    if mode != "str" and pd.api.types.is_integer_dtype(raw.dtype):
        missing = raw.isna().to_numpy()
        return pd.Series(raw.to_numpy(dtype="int64", na_value=0), index=index), missing, none
    if mode != "str" and (pd.api.types.is_float_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype)):
        values = raw.astype("float64").to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(values)
        with np.errstate(invalid="ignore"):
            ok = missing | (np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < 2**63))
        if ok.all():
            return pd.Series(np.where(missing, 0, values).astype("int64"), index=index), missing, none
        if mode == "int64":
            return pd.Series(np.where(ok & ~missing, values, 0).astype("int64"), index=index), missing, ~ok
        return raw.astype("str"), missing, none
    text = _text(raw).str.strip()
    missing = (text.isna() | (text == "")).to_numpy(dtype=bool)
    if mode == "str":
        return text, missing, none
    integral = text.str.fullmatch(_INT_ID).fillna(False).to_numpy(dtype=bool)
    if mode == "auto" and not (integral | missing).all():
        return text, missing, none
    digits = text.where(integral, "0")
    if digits.str.contains(".", regex=False).any():
        digits = digits.str.replace(r"\.0*$", "", regex=True)
    return pd.Series(digits.astype("int64").to_numpy(), index=index), missing, ~integral & ~missing


def _to_ns(stamps: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Naive datetime64[ns] (tz-aware -> UTC, then tz dropped) and a mask of out-of-range values."""
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    out_of_range = np.zeros(len(stamps), dtype=bool)
    if stamps.dtype != "datetime64[ns]":
        too_far = (stamps < pd.Timestamp.min) | (stamps > pd.Timestamp.max)
        out_of_range = too_far.fillna(False).to_numpy(dtype=bool)
        if out_of_range.any():
            stamps = stamps.mask(too_far)
        stamps = stamps.astype("datetime64[ns]")
    return stamps, out_of_range


def _timestamps(raw: pd.Series, mapping: ColumnMapping) -> tuple[pd.Series, list[tuple[np.ndarray, Any]]]:
    """(naive datetime64[ns] timestamps, [(bad mask, message(s))])."""
    index = raw.index
    if mapping.timestamp_unit is not None:
        values, missing, bad = _numbers(raw)
        origin = pd.Timestamp(mapping.timestamp_origin if mapping.timestamp_origin is not None else 0)
        if origin.tzinfo is not None:
            origin = origin.tz_convert("UTC").tz_localize(None)
        origin_ns = origin.as_unit("ns").value
        factor = _UNIT_NS[mapping.timestamp_unit]
        with np.errstate(invalid="ignore", over="ignore"):
            total = origin_ns + values * float(factor)
            infinite = ~missing & ~bad & ~np.isfinite(values)
            far = ~missing & ~bad & ~infinite & ((total < _NS_MIN + 1e9) | (total > _NS_MAX - 1e9))
        ok = ~(missing | bad | infinite | far)
        delta = np.round(np.where(ok, values, 0.0) * factor).astype("int64")
        ns = np.where(ok, origin_ns + delta, np.iinfo("int64").min)  # int64 min is NaT
        stamps = pd.Series(ns.view("datetime64[ns]"), index=index)
        what = f"number of {mapping.timestamp_unit} since {origin}"
        return stamps, [
            (missing, "missing timestamp"),
            (bad, lambda m: "bad timestamp: not a " + what + " (" + _quote(raw[m]) + ")"),
            (infinite | far, lambda m: "bad timestamp: out of range (" + _quote(raw[m]) + ")"),
        ]
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        stamps, far = _to_ns(raw)
        missing = raw.isna().to_numpy() & ~far
        return stamps, [
            (missing, "missing timestamp"),
            (far, lambda m: "bad timestamp: out of range (" + _quote(raw[m]) + ")"),
        ]
    missing = _blank(raw)
    fmt = mapping.timestamp_format or "ISO8601"
    if raw.dtype == object:  # mixed Python objects (datetimes, strings, None): parse each kind apart
        is_text = raw.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        ns = np.full(len(raw), np.iinfo("int64").min, dtype="int64")
        far = np.zeros(len(raw), dtype=bool)
        for part, part_fmt in ((is_text & ~missing, fmt), (~is_text & ~missing, None)):
            if part.any():
                values, part_far = _parse_dates(raw[part], part_fmt)
                ns[part] = values.to_numpy().view("int64")
                far[part] = part_far
        stamps = pd.Series(ns.view("datetime64[ns]"), index=index)
    else:
        stamps, far = _parse_dates(_text(raw), fmt)
    bad = ~missing & ~far & stamps.isna().to_numpy()
    expected = "an ISO 8601 date" if mapping.timestamp_format is None else f"a date as {mapping.timestamp_format}"
    return stamps, [
        (missing, "missing timestamp"),
        (bad, lambda m: f"bad timestamp: not {expected} (" + _quote(raw[m]) + ")"),
        (far, lambda m: "bad timestamp: out of range (" + _quote(raw[m]) + ")"),
    ]


def _parse_dates(raw: pd.Series, fmt: str | None) -> tuple[pd.Series, np.ndarray]:
    """Naive datetime64[ns] of text (or datetime objects when ``fmt`` is None); NaT where unparseable."""
    if fmt is not None:
        raw = raw.astype("str").str.strip()
    try:
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format=fmt)
    except (TypeError, ValueError, OverflowError):  # objects to_datetime cannot even coerce
        parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    return _to_ns(pd.Series(parsed, index=raw.index))


def _labels(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(nullable Int8 labels, mask of values that are not a label)."""
    if pd.api.types.is_bool_dtype(raw.dtype) or pd.api.types.is_numeric_dtype(raw.dtype):
        values = raw.astype("float64").to_numpy(dtype="float64", na_value=np.nan)
        known = ~np.isnan(values)
        bad = known & (values != 0) & (values != 1)
        codes = np.where(known & ~bad, values, 0).astype("int8")
        return pd.Series(pd.arrays.IntegerArray(codes, ~(known & ~bad)), index=raw.index), bad
    empty = _blank(raw)
    obj = raw.astype(object)
    text = obj.map(lambda v: str(int(v)) if isinstance(v, bool) else str(v)) if raw.dtype == object else raw
    codes = text.map(_LABELS)
    unmatched = codes.isna().to_numpy() & ~empty
    if unmatched.any():  # rare spellings ("True ", "FRAUD"): normalise only those rows
        fixed = _text(text[unmatched]).str.strip().str.lower().map(_LABELS)
        codes = codes.astype("float64")
        codes[unmatched] = fixed.to_numpy(dtype="float64", na_value=np.nan)
    values = codes.to_numpy(dtype="float64", na_value=np.nan)
    bad = ~empty & np.isnan(values)
    known = ~np.isnan(values)
    out = pd.arrays.IntegerArray(np.where(known, values, 0).astype("int8"), ~known)
    return pd.Series(out, index=raw.index), bad


def _explain(n: int, rules: list[tuple[np.ndarray, Any]]) -> np.ndarray:
    """Per row, the messages of every broken rule joined with "; " (None for a valid row).

    Like ``trillium.core.jobs.reasons_from`` but a message may be a function of the broken rows'
    values (``mask -> Series of str``), built only for the rows that break the rule.
    """
    out = np.full(n, None, dtype=object)
    for mask, message in rules:
        if not mask.any():
            continue
        where = np.flatnonzero(mask)
        if callable(message):
            texts = np.asarray(message(mask), dtype=object)
        else:
            texts = np.full(len(where), message, dtype=object)
        current = out[where]
        out[where] = [t if c is None else f"{c}; {t}" for c, t in zip(current, texts, strict=True)]
    return out


# --------------------------------------------------------------------------- normalize


def normalize(
    frame: pd.DataFrame, mapping: ColumnMapping, *, source: str = "<frame>"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid canonical rows, quarantined rows) of one frame in ``mapping``'s format.

    Valid rows: the canonical columns (``trillium.finance.records``) the format has, then the
    kept extra columns; the input index is kept (input row numbers in a batch job). Quarantined
    rows: the original raw columns plus ``reason`` (every broken rule, "; "-joined), same index.
    Every input row is in exactly one of the two. Duplicate transaction ids within the frame:
    the first occurrence is kept, later ones are quarantined (ids are not checked across
    chunks). Raises ``InputValidationError`` only when a mapped column is missing.
    """
    mapping.validate_columns(frame.columns, source=source)
    if not frame.index.is_unique:
        logger.warning("%s: the frame index is not unique; row numbers are positions instead", source)
        frame = frame.reset_index(drop=True)
    n = len(frame)
    index = frame.index
    present = mapping.present_fields(frame.columns)
    rules: list[tuple[np.ndarray, Any]] = []
    out: dict[str, Any] = {}

    # transaction_id (the frame index when the format has none)
    if mapping.transaction_id is None:
        ids = pd.Series(np.asarray(index), index=index)
        if not pd.api.types.is_integer_dtype(ids.dtype):
            ids = ids.astype("str")
        else:
            ids = ids.astype("int64")
        id_missing = np.zeros(n, dtype=bool)
    else:
        raw_id = frame[mapping.transaction_id]
        ids, id_missing, id_bad = _ids(raw_id, mapping.id_dtype)
        rules.append((id_missing, "missing transaction_id"))
        rules.append((id_bad, lambda m, r=raw_id: "bad transaction_id: not an integer (" + _quote(r[m]) + ")"))
    out[TRANSACTION_ID] = ids
    known = pd.Series(ids.to_numpy(), index=index)[~id_missing]
    dup_local = known.duplicated(keep="first").to_numpy()
    if dup_local.any():
        dup = np.zeros(n, dtype=bool)
        dup[np.flatnonzero(~id_missing)[dup_local]] = True
        first_row = pd.Series(known.index, index=known.to_numpy())
        first_row = first_row[~first_row.index.duplicated(keep="first")]

        def dup_message(m: np.ndarray) -> pd.Series:
            values = pd.Series(ids.to_numpy()[m])
            rows = values.map(first_row).astype(str)
            return "duplicate transaction_id " + _quote(values) + " (first at row " + rows + ")"

        rules.append((dup, dup_message))

    # timestamp
    stamps, ts_rules = _timestamps(frame[mapping.timestamp], mapping)
    rules.extend(ts_rules)
    out[TIMESTAMP] = stamps

    # customer / terminal: required per row when the format has the column
    for fld in (CUSTOMER_ID, TERMINAL_ID):
        if fld not in present:
            continue
        raw_col = frame[present[fld]]
        values, missing, bad = _ids(raw_col, mapping.id_dtype)
        rules.append((missing, f"missing {fld}"))
        rules.append((bad, lambda m, r=raw_col, f=fld: f"bad {f}: not an integer (" + _quote(r[m]) + ")"))
        out[fld] = values

    # amount
    raw_amount = frame[mapping.amount]
    amount, a_missing, a_bad = _numbers(raw_amount)
    with np.errstate(invalid="ignore"):
        a_inf = ~a_missing & ~a_bad & ~np.isfinite(amount)
        a_neg = ~a_missing & ~a_bad & ~a_inf & (amount < 0)
    rules += [
        (a_missing, "missing amount"),
        (a_bad, lambda m: "bad amount: not a number (" + _quote(raw_amount[m]) + ")"),
        (a_inf, lambda m: "bad amount: not finite (" + _quote(raw_amount[m]) + ")"),
        (a_neg, lambda m: "bad amount: negative (" + pd.Series(amount[m]).astype(str) + ")"),
    ]
    out[AMOUNT] = pd.Series(amount, index=index)

    # label
    if LABEL in present:
        raw_label = frame[present[LABEL]]
        labels, l_bad = _labels(raw_label)
        rules.append((l_bad, lambda m: "bad label: " + _quote(raw_label[m]) + f" is not one of {_LABEL_CHOICES}"))
    else:
        unknown = pd.arrays.IntegerArray(np.zeros(n, dtype="int8"), np.ones(n, dtype=bool))
        labels = pd.Series(unknown, index=index)
    out[LABEL] = labels

    # extra columns
    used = set(mapping.fields_map().values())
    renames = dict(mapping.rename)
    for col in frame.columns:
        if col in used or col in mapping.drop:
            continue
        if col in renames:
            out[renames[col]] = frame[col]
        elif col in mapping.numeric:
            values, missing, bad = _numbers(frame[col])
            with np.errstate(invalid="ignore"):
                inf = ~missing & ~bad & ~np.isfinite(values)
            rules += [
                (missing, f"missing {col}"),
                (bad | inf, lambda m, r=frame[col], c=col: f"bad {c}: not a finite number (" + _quote(r[m]) + ")"),
            ]
            out[str(col)] = pd.Series(values, index=index)
        elif mapping.keep_extra:
            out[col] = frame[col]

    reasons = pd.Series(_explain(n, rules), index=index, dtype=object)
    good, quarantined = split_valid(frame, reasons)
    keep = reasons.isna().to_numpy()
    canonical = pd.DataFrame(out, index=index)
    valid = canonical.iloc[keep] if not keep.all() else canonical
    valid = valid.astype(_final_dtypes(valid))
    if len(quarantined):
        logger.info("%s: %d of %d rows quarantined", source, len(quarantined), n)
    assert len(good) == len(valid)
    return valid, quarantined


def _final_dtypes(valid: pd.DataFrame) -> dict[str, Any]:
    """Id columns whose values are all integral become int64 (their invalid rows are gone)."""
    dtypes: dict[str, Any] = {AMOUNT: "float64", LABEL: "Int8", TIMESTAMP: "datetime64[ns]"}
    for fld in (TRANSACTION_ID, CUSTOMER_ID, TERMINAL_ID):
        if fld in valid.columns and not pd.api.types.is_integer_dtype(valid[fld].dtype):
            dtypes[fld] = "str"
    return {k: v for k, v in dtypes.items() if k in valid.columns}


# --------------------------------------------------------------------------- sources and readers


_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


# What a damaged file raises from inside the readers (pandas' python engine, the .gz / .bz2 / .xz
# decompressors, pyarrow): all of it means "this file cannot be read", never a crash.
_CSV_READ_ERRORS: tuple[type[BaseException], ...] = (
    pd.errors.ParserError, csv.Error, UnicodeDecodeError, ValueError, OSError, EOFError, zlib.error, lzma.LZMAError,
)


def _parquet_read_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (pa.ArrowException, OSError, ValueError)


class _CsvTransactions(CsvSource):
    """``CsvSource`` whose damaged input (a corrupt .gz / .bz2 / .xz stream, an unterminated
    quote the python engine gives up on) is a ``JobError`` naming the file, like a parse error."""

    def chunks(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        try:
            yield from super().chunks(chunk_rows)
        except JobError:
            raise
        except _CSV_READ_ERRORS as exc:
            raise JobError(f"cannot read {self.path} as CSV: {type(exc).__name__}: {exc}") from exc


class _ParquetTransactions(ParquetSource):
    """``ParquetSource`` whose damaged pages or metadata (found only while iterating) are a
    ``JobError`` naming the file, like a footer that cannot be read."""

    def chunks(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        try:
            yield from super().chunks(chunk_rows)
        except JobError:
            raise
        except _parquet_read_errors() as exc:
            raise JobError(f"cannot read {self.path} as Parquet: {type(exc).__name__}: {exc}") from exc


def _is_sql(target: Target) -> bool:
    return isinstance(target, (Engine, Database)) or (isinstance(target, str) and "://" in target)


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    for suffix in _CSV_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputValidationError(
        f"{path}: unknown transaction file type; expected .parquet, .csv, .csv.gz, .csv.bz2 or .csv.xz "
        "(or an SQLAlchemy URL with table=)"
    )


def _engine_of(target: Engine | Database | str) -> Engine:
    if isinstance(target, Database):
        return target.engine
    if isinstance(target, Engine):
        return target
    from sqlalchemy import create_engine

    return create_engine(target)


def _name(target: Target, table: str | None = None) -> str:
    """A printable name of the input (no password)."""
    if isinstance(target, Database):
        url = target.safe_url
    elif isinstance(target, Engine):
        url = target.url.render_as_string(hide_password=True)
    elif isinstance(target, str) and "://" in target:
        from sqlalchemy.engine import make_url

        url = make_url(target).render_as_string(hide_password=True)
    else:
        return str(target)
    return f"{url} table {table!r}" if table else url


def transaction_source(
    path_or_url: Target,
    *,
    table: str | None = None,
    query: Select[Any] | None = None,
    order_by: str | Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Source:
    """The core engine's ``Source`` for a transaction input, for a batch job that calls
    ``normalize`` on each chunk.

    A ``.parquet`` file -> ``ParquetSource``; ``.csv`` (also ``.csv.gz/.bz2/.xz``) ->
    ``CsvSource`` (every value a string); an SQLAlchemy URL, ``Engine`` or ``Database`` with
    ``table=`` (or a ``Select`` in ``query=``) -> ``SqlSource`` ordered by ``order_by``, else by
    the table's primary key. Raises ``InputValidationError`` for a missing file or table or an
    unknown file type.
    """
    if _is_sql(path_or_url):
        target: Any = path_or_url
        if query is not None:
            if not isinstance(query, Select):
                raise InputValidationError(
                    f"{_name(target)}: query must be a SQLAlchemy Select (values as bound parameters), "
                    f"not {type(query).__name__}"
                )
            if not order_by:
                raise InputValidationError(f"{_name(target)}: a query needs order_by for a stable chunk order")
            return SqlSource(target, query, chunk_rows, order_by=order_by)
        if not table:
            raise InputValidationError(f"{_name(target)}: reading transactions from a database needs table=")
        engine = _engine_of(target)
        try:
            insp = inspect(engine)
            if not insp.has_table(table):
                raise InputValidationError(f"{_name(target)}: no table {table!r}; tables: {insp.get_table_names()}")
            if not order_by and not insp.get_pk_constraint(table).get("constrained_columns"):
                raise InputValidationError(
                    f"{_name(target, table)} has no primary key: pass order_by (e.g. the transaction id "
                    "column) so chunks keep a stable order"
                )
        finally:
            if not isinstance(target, (Engine, Database)):
                engine.dispose()
        return SqlSource(target, table, chunk_rows, order_by=order_by)
    if table is not None or query is not None:
        raise InputValidationError(f"{path_or_url}: table= and query= apply to a database URL, not a file")
    path = Path(path_or_url).expanduser()
    kind = _file_kind(path)
    if not path.is_file():
        raise InputValidationError(f"transaction file not found: {path}")
    if kind == "parquet":
        return _ParquetTransactions(path, chunk_rows)
    return _CsvTransactions(path, chunk_rows)  # the core source decompresses .gz / .bz2 / .xz itself


def _empty_input(source: Source) -> pd.DataFrame:
    """A zero-row frame with the input's columns (a header-only CSV or empty table yields no chunk)."""
    if isinstance(source, ParquetSource):
        import pyarrow.parquet as pq

        try:
            return pq.read_schema(source.path).empty_table().to_pandas()
        except _parquet_read_errors() as exc:
            raise JobError(f"cannot read {source.path} as Parquet: {type(exc).__name__}: {exc}") from exc
    if isinstance(source, CsvSource):
        try:
            return pd.read_csv(source.path, nrows=0, dtype=str)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
        except _CSV_READ_ERRORS as exc:  # e.g. a header line with an unterminated quote
            raise JobError(f"cannot read {source.path} as CSV: {type(exc).__name__}: {exc}") from exc
    if isinstance(source, SqlSource):
        if isinstance(source.query, Select):
            return pd.DataFrame(columns=[c.name for c in source.query.selected_columns])
        return pd.DataFrame(columns=[c["name"] for c in inspect(source.engine).get_columns(source.query)])
    return pd.DataFrame()


def read_transactions(
    path_or_url: Target,
    format: str = "auto",
    *,
    mapping: ColumnMapping | None = None,
    table: str | None = None,
    query: Select[Any] | None = None,
    order_by: str | Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid canonical rows, quarantined raw rows) of a whole transaction file or table.

    ``format`` is a ``PROFILES`` name or "auto" (``detect_format``); ``mapping`` overrides it.
    The rows are read through the same ``Source`` a batch job uses, numbered 0.. in input order
    (the frame index, kept in both outputs). CSV lines the reader cannot split (more fields
    than the header) are quarantined too, with row number -1 and their fields in ``record``.
    A table without a primary key is read in the order of ``order_by``, else of the mapping's
    transaction id column.
    """
    if format != "auto" and format not in PROFILES and mapping is None:
        raise InputValidationError(f"unknown transaction format {format!r}; expected auto or one of {list(PROFILES)}")
    name = _name(path_or_url, table)
    if _is_sql(path_or_url) and table and not order_by and query is None:
        order_by = _default_order(path_or_url, table, format, mapping)
    source = transaction_source(path_or_url, table=table, query=query, order_by=order_by, chunk_rows=200_000)
    frames: list[pd.DataFrame] = []
    rejected: list[Any] = []
    try:
        for chunk in source.chunks():
            frames.append(chunk)
            rejected.extend(source.take_rejected())
        rejected.extend(source.take_rejected())
        raw = pd.concat(frames, ignore_index=True) if frames else _empty_input(source)  # index: row numbers
    except JobError as exc:
        raise InputValidationError(f"{name}: {exc}") from exc
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    if mapping is None:
        mapping = PROFILES[format if format != "auto" else detect_format(raw.columns, source=name)]
    valid, quarantined = normalize(raw, mapping, source=name)
    if rejected:
        extra = pd.DataFrame(
            {"reason": [r.reason for r in rejected], "record": [",".join(map(str, r.record)) for r in rejected]},
            index=pd.Index([r.row_index for r in rejected]),
        )
        quarantined = pd.concat([quarantined, extra]) if len(quarantined) else extra
    return valid, quarantined


def _default_order(target: Target, table: str, format: str, mapping: ColumnMapping | None) -> list[str] | None:
    """The mapping's id column when the table has no primary key (None: let the key decide)."""
    engine = _engine_of(target)  # type: ignore[arg-type]
    try:
        insp = inspect(engine)
        if not insp.has_table(table) or insp.get_pk_constraint(table).get("constrained_columns"):
            return None
        columns = [c["name"] for c in insp.get_columns(table)]
    finally:
        if not isinstance(target, (Engine, Database)):
            engine.dispose()
    if mapping is None:
        try:
            mapping = PROFILES[format if format != "auto" else detect_format(columns, source=_name(target, table))]
        except InputValidationError:
            return None
    return [mapping.transaction_id] if mapping.transaction_id in columns else None


def _has_carriage_return(frame: pd.DataFrame) -> bool:
    """Whether a text value or a column name holds a carriage return."""
    if any("\r" in str(c) for c in frame.columns):
        return True
    for col in range(frame.shape[1]):
        values = frame.iloc[:, col]
        if values.dtype == object:
            if values.map(lambda v: isinstance(v, str) and "\r" in v).any():
                return True
        elif pd.api.types.is_string_dtype(values.dtype) and values.str.contains("\r", regex=False, na=False).any():
            return True
    return False


def write_transactions(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write canonical records to ``.parquet`` or ``.csv`` (``.csv.gz`` ...) by suffix, atomically
    (temporary file, then rename); the index is not written. Returns the path."""
    path = Path(path).expanduser()
    kind = _file_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if kind == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            compression = {".csv": None, ".csv.gz": "gzip", ".csv.bz2": "bz2", ".csv.xz": "xz"}[kind]
            # The csv module quotes a field only for the characters of the line terminator: with
            # "\n", a lone "\r" in a text value (a quoted CSV cell can hold one) would be written
            # bare and split the row on reading. RFC 4180's "\r\n" makes such fields quoted.
            eol = "\r\n" if _has_carriage_return(frame) else "\n"
            frame.to_csv(tmp, index=False, compression=compression, lineterminator=eol)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputValidationError(f"cannot write transactions to {path}: {exc.strerror or exc}") from exc
    return path
