"""The canonical transaction record every finance component speaks.

Adapters turn external formats into a pandas frame with these columns; features, models, the
scorer and the batch jobs read nothing else. Keeping one contract means a new bank format is
one column mapping, not a new pipeline.

| column           | dtype            | meaning                                                   |
|------------------|------------------|-----------------------------------------------------------|
| transaction_id   | int64 or string  | unique per transaction                                    |
| timestamp        | datetime64[ns]   | naive, in the data's own clock (the handbook's is local)  |
| customer_id      | int64 or string  | the card; may be absent for card-less data (ULB)          |
| terminal_id      | int64 or string  | the merchant terminal; may be absent (ULB)                |
| amount           | float64          | >= 0                                                      |
| label            | Int8 (nullable)  | 1 fraud, 0 genuine, <NA> unknown                          |
| any other column | as read          | kept (e.g. ULB's V1..V28, the handbook's fraud scenario)  |
"""

from __future__ import annotations

TRANSACTION_ID = "transaction_id"
TIMESTAMP = "timestamp"
CUSTOMER_ID = "customer_id"
TERMINAL_ID = "terminal_id"
AMOUNT = "amount"
LABEL = "label"

REQUIRED = (TRANSACTION_ID, TIMESTAMP, AMOUNT)
"""Columns without which a row cannot be scored at all."""

CANONICAL = (TRANSACTION_ID, TIMESTAMP, CUSTOMER_ID, TERMINAL_ID, AMOUNT, LABEL)

FRAUD, GENUINE = "fraud", "genuine"
"""The two analyst feedback labels."""
