"""Finance normalisation: one frame in a known format -> (valid canonical rows, quarantined rows).

``normalize`` checks a frame's columns against its ``ColumnMapping``
(``trillium.finance.formats``), parses every mapped column (ids, timestamp, amount, label,
numeric extras) and gives each row that breaks a rule a ``reason`` naming every broken rule
and quoting the value. It is fully vectorized, so it is cheap enough to run on every chunk of a
batch job, and accepts input typed (Parquet, SQL) or as strings (``CsvSource`` reads every CSV
value as a string so one bad value cannot fail a chunk).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from trillium.core.jobs import split_valid
from trillium.finance.formats import UNIT_NS, ColumnMapping, IdDtype
from trillium.finance.records import AMOUNT, CUSTOMER_ID, LABEL, TERMINAL_ID, TIMESTAMP, TRANSACTION_ID

__all__ = ["normalize"]

logger = logging.getLogger(__name__)

_NS_MIN, _NS_MAX = pd.Timestamp.min.value, pd.Timestamp.max.value
_INT_ID = r"[+-]?(?:0|[1-9][0-9]{0,17})(?:\.0*)?"  # RE2-friendly (no \d): runs in pyarrow; 18 digits fit int64
_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1, "genuine": 0, "fraud": 1}
_LABEL_CHOICES = "0, 1, true, false, fraud, genuine or empty"
_DETAIL_CHARS = 40  # raw values quoted in a reason are cut to this length


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
        factor = UNIT_NS[mapping.timestamp_unit]
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
    assert len(good) == len(valid)  # nosec B101 # internal invariant, not input validation
    return valid, quarantined


def _final_dtypes(valid: pd.DataFrame) -> dict[str, Any]:
    """Id columns whose values are all integral become int64 (their invalid rows are gone)."""
    dtypes: dict[str, Any] = {AMOUNT: "float64", LABEL: "Int8", TIMESTAMP: "datetime64[ns]"}
    for fld in (TRANSACTION_ID, CUSTOMER_ID, TERMINAL_ID):
        if fld in valid.columns and not pd.api.types.is_integer_dtype(valid[fld].dtype):
            dtypes[fld] = "str"
    return {k: v for k, v in dtypes.items() if k in valid.columns}
