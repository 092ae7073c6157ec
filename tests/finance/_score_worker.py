"""``score_file`` run in a child process, so that test_scoring.py can SIGKILL it mid-way.

Usage: ``python _score_worker.py '<json config>'`` with keys: db_url, model (registry name; its
``production`` version is loaded), input, output, chunk_rows, threshold, sleep (seconds added
to each chunk's scoring, so the parent has time to kill the job between checkpoints).
The parent must run with the same ``TRILLIUM_HOME`` (the registry's files live there).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from trillium.core.db import connect
from trillium.core.registry import ModelRegistry
from trillium.finance.batch import score_file
from trillium.finance.pipeline import FraudScorer


def main(cfg: dict[str, Any]) -> None:
    db = connect(cfg["db_url"])
    scorer = FraudScorer.from_registry(cfg["model"], "production", registry=ModelRegistry(db),
                                       threshold=cfg["threshold"])
    sleep = float(cfg.get("sleep", 0.0))
    if sleep:
        score_features = scorer.score_features

        def slow(*args: Any, **kwargs: Any) -> Any:
            time.sleep(sleep)
            return score_features(*args, **kwargs)

        scorer.score_features = slow  # type: ignore[method-assign]
    score_file(scorer, cfg["input"], cfg["output"], chunk_rows=int(cfg["chunk_rows"]), db=db, progress=False)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
