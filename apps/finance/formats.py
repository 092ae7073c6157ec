"""Finance transaction formats: where each canonical field comes from, the ready profiles, detection.

A format is a ``ColumnMapping`` (which source column holds each canonical field, how the
timestamp is given, which other columns to keep); ``PROFILES`` holds the ready ones
(canonical, handbook, ulb) and ``detect_format`` picks one from the column names.
``ColumnMapping.validate_columns`` checks a frame's columns against a format before
``trillium.finance.normalization.normalize`` turns its rows into canonical records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from trillium.core.errors import InputValidationError
from trillium.finance.records import AMOUNT, CANONICAL, CUSTOMER_ID, LABEL, TERMINAL_ID, TIMESTAMP, TRANSACTION_ID

__all__ = [
    "PROFILES",
    "ULB_FEATURES",
    "UNIT_NS",
    "ColumnMapping",
    "IdDtype",
    "detect_format",
]

IdDtype = Literal["auto", "int64", "str"]

UNIT_NS = {"D": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
"""Nanoseconds per ``timestamp_unit``. Public because ``normalization`` converts numeric
timestamps with the same table the mapping checks its unit against."""


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
        if self.timestamp_unit is not None and self.timestamp_unit not in UNIT_NS:
            raise InputValidationError(
                f"mapping {self.name!r}: timestamp_unit must be None or one of {sorted(UNIT_NS)}, "
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
