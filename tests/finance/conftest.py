"""Finance test fixtures shared by the modules that fit models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One OpenMP / torch thread while these tests fit models.

    The test machine's 2 cores are shared: LightGBM's default (all cores, spinning OpenMP
    barriers) then takes 30-80 s for a fit that takes 1 s on one thread. Results do not depend
    on it (LightGBM runs with ``deterministic``); the limits are restored afterwards.
    """
    import lightgbm  # noqa: F401  (load its OpenMP runtime so that the limit reaches it)

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="openmp"):
            yield
    finally:
        torch.set_num_threads(torch_threads)
