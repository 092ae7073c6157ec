"""The handbook transaction simulator: reproducibility, the generative rules and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trillium.core.cli import app
from trillium.core.errors import InputValidationError
from trillium.finance import records
from trillium.finance.simulate import (
    FRAUD_SCENARIO,
    HANDBOOK_COLUMNS,
    Simulation,
    simulate,
    simulate_transactions,
    to_handbook,
)

SMALL = {"n_customers": 200, "n_terminals": 400, "n_days": 30}
CANONICAL_DTYPES = {
    records.TRANSACTION_ID: "int64", records.TIMESTAMP: "datetime64[ns]", records.CUSTOMER_ID: "int64",
    records.TERMINAL_ID: "int64", records.AMOUNT: "float64", records.LABEL: "Int8", FRAUD_SCENARIO: "int8",
}


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(**SMALL, seed=3)


def _days(sim: Simulation) -> np.ndarray:
    return ((sim.transactions[records.TIMESTAMP] - sim.start) // pd.Timedelta(days=1)).to_numpy()


def test_same_seed_identical_different_seed_differs(sim: Simulation) -> None:
    again = simulate(**SMALL, seed=3)
    pd.testing.assert_frame_equal(sim.transactions, again.transactions)
    pd.testing.assert_frame_equal(sim.customers, again.customers)
    pd.testing.assert_frame_equal(sim.terminals, again.terminals)
    other = simulate_transactions(**SMALL, seed=4)
    assert not other.equals(sim.transactions)
    assert not np.array_equal(other[records.AMOUNT].to_numpy()[:100], sim.transactions[records.AMOUNT].to_numpy()[:100])


def test_canonical_format_sorted_and_in_range(sim: Simulation) -> None:
    tx = sim.transactions
    assert {c: str(t) for c, t in tx.dtypes.items()} == CANONICAL_DTYPES
    assert (tx[records.TRANSACTION_ID].to_numpy() == np.arange(len(tx))).all()
    assert tx[records.TIMESTAMP].is_monotonic_increasing
    assert tx[records.TIMESTAMP].min() >= pd.Timestamp("2018-04-01")
    assert tx[records.TIMESTAMP].max() < pd.Timestamp("2018-04-01") + pd.Timedelta(days=SMALL["n_days"])
    assert (tx[records.AMOUNT] >= 0).all()
    assert set(tx[FRAUD_SCENARIO].unique()) <= {0, 1, 2, 3}
    assert ((tx[FRAUD_SCENARIO] > 0) == (tx[records.LABEL] == 1)).all()
    # About mean_nb_tx_per_day per customer with terminals and day, minus the ~3 % of times dropped.
    active = sim.customers[sim.customers.n_terminals > 0]
    expected = active.mean_nb_tx_per_day.sum() * SMALL["n_days"] * 0.969
    assert abs(len(tx) - expected) < 5 * np.sqrt(expected)


def test_every_amount_above_220_is_fraud(sim: Simulation) -> None:
    tx = sim.transactions
    assert (tx.loc[tx[records.AMOUNT] > 220, records.LABEL] == 1).all()
    assert (tx.loc[tx[FRAUD_SCENARIO] == 1, records.AMOUNT] > 220).all()


def test_scenario2_compromised_terminal_windows(sim: Simulation) -> None:
    tx, days = sim.transactions, _days(sim)
    terminal, scenario = tx[records.TERMINAL_ID].to_numpy(), tx[FRAUD_SCENARIO].to_numpy()
    in_window = np.zeros(len(tx), dtype=bool)
    for d, compromised in enumerate(sim.compromised_terminals):
        window = np.isin(terminal, compromised) & (days >= d) & (days < d + 28)
        # Every transaction of a compromised terminal in its 28 days is fraud (2, or 3 when overwritten).
        assert np.isin(scenario[window], [2, 3]).all()
        in_window |= window
    assert ((scenario == 2) == (in_window & (scenario != 3))).all()
    assert (scenario == 2).sum() > 0

    # From the data alone: each scenario-2 transaction has, within the 28 days before it, a start
    # day from which all of its terminal's transactions for 28 days are fraud.
    fraud = tx[records.LABEL].to_numpy() == 1
    for row in np.flatnonzero(scenario == 2):
        same = terminal == terminal[row]
        assert any(fraud[same & (days >= d) & (days < d + 28)].all() for d in range(days[row] - 27, days[row] + 1))


def test_scenario3_amounts_multiplied_by_five(sim: Simulation) -> None:
    tx, days = sim.transactions, _days(sim)
    customer, scenario = tx[records.CUSTOMER_ID].to_numpy(), tx[FRAUD_SCENARIO].to_numpy()
    s3 = scenario == 3
    assert s3.sum() > 0
    in_window = np.zeros(len(tx), dtype=bool)
    for d, compromised in enumerate(sim.compromised_customers):
        in_window |= np.isin(customer, compromised) & (days >= d) & (days < d + 14)
    assert in_window[s3].all()
    # About a third of the compromised customers' transactions (overlapping draws add a few).
    assert 0.3 <= s3.sum() / in_window.sum() <= 0.45
    amount = tx[records.AMOUNT].to_numpy()
    cents = np.round(amount * 100).astype(np.int64)
    assert (cents[s3] % 5 == 0).all()  # a cent amount times 5
    assert (cents[~s3] % 5 == 0).mean() < 0.35  # where a genuine amount is so by chance (~20 %)
    ratio = amount[s3] / sim.customers.mean_amount.to_numpy()[customer[s3]]
    assert 4.0 < np.median(ratio) < 7.0
    genuine = amount[scenario == 0] / sim.customers.mean_amount.to_numpy()[customer[scenario == 0]]
    assert 0.8 < np.median(genuine) < 1.2


def test_terminals_within_radius(sim: Simulation) -> None:
    cxy = sim.customers[["x", "y"]].to_numpy()
    txy = sim.terminals[["x", "y"]].to_numpy()
    within = np.linalg.norm(cxy[:, None, :] - txy[None, :, :], axis=2) < sim.radius
    for c in range(len(cxy)):
        assert np.array_equal(sim.available_terminals(c), np.flatnonzero(within[c]))
    assert (sim.customers.n_terminals.to_numpy() == within.sum(axis=1)).all()
    tx = sim.transactions
    assert within[tx[records.CUSTOMER_ID], tx[records.TERMINAL_ID]].all()
    assert (cxy >= 0).all() and (cxy <= 100).all() and (txy >= 0).all() and (txy <= 100).all()


def test_customers_without_terminals_make_no_transactions() -> None:
    s = simulate(**SMALL, radius=1.0, seed=1)  # ~0.13 terminals per customer on average
    lonely = s.customers.customer_id[s.customers.n_terminals == 0]
    assert len(lonely) > 100
    assert not s.transactions[records.CUSTOMER_ID].isin(lonely).any()


def test_reference_run_fraud_rate_and_size() -> None:
    """The handbook's reference configuration: ~1.75 M transactions, ~0.8 % fraud (takes ~1 s)."""
    tx = simulate_transactions(seed=0)
    assert 1_650_000 < len(tx) < 1_900_000
    rate = tx[records.LABEL].astype(int).mean()
    assert 0.006 < rate < 0.011
    shares = tx[FRAUD_SCENARIO].value_counts(normalize=True)
    assert shares[2] > shares[3] > shares[1] > 0  # handbook: 9,077 / 4,631 / 973


def test_to_handbook_columns_and_counters(sim: Simulation) -> None:
    hb = to_handbook(sim.transactions)
    assert tuple(hb.columns) == HANDBOOK_COLUMNS
    assert all(str(hb[c].dtype) == "int64" for c in HANDBOOK_COLUMNS if c not in ("TX_DATETIME", "TX_AMOUNT"))
    expected = (sim.transactions[records.TIMESTAMP] - pd.Timestamp("2018-04-01")).dt.total_seconds().astype("int64")
    assert (hb.TX_TIME_SECONDS.to_numpy() == expected.to_numpy()).all()
    assert (hb.TX_TIME_DAYS.to_numpy() == hb.TX_TIME_SECONDS.to_numpy() // 86400).all()
    assert (hb.TX_FRAUD.to_numpy() == sim.transactions[records.LABEL].to_numpy(dtype=int)).all()
    # Without the recorded start (e.g. a frame read back from CSV) an explicit one gives the same counters.
    bare = sim.transactions.copy()
    bare.attrs = {}
    shifted = to_handbook(bare, start_date="2018-03-31")
    assert (shifted.TX_TIME_DAYS.to_numpy() == hb.TX_TIME_DAYS.to_numpy() + 1).all()
    with pytest.raises(InputValidationError, match="fraud_scenario"):
        to_handbook(sim.transactions.drop(columns=[FRAUD_SCENARIO]))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_customers": 0}, "n_customers must be >= 1"),
    ({"n_terminals": -5}, "n_terminals must be >= 1"),
    ({"n_days": 0}, "n_days must be >= 1"),
    ({"n_days": 2.5}, "n_days must be an integer"),
    ({"start_date": "2018-13-45"}, "is not a date"),
    ({"start_date": "not a date"}, "is not a date"),
    ({"radius": 0}, "radius must be a positive number"),
    ({"seed": -1}, "seed must be >= 0"),
])
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputValidationError, match=message):
        simulate(**{**SMALL, **kwargs})


def _cli(*args: str):
    return CliRunner().invoke(app, ["finance", "simulate", "--customers", "200", "--terminals", "400", "--days", "30",
                                    *args])


def test_cli_writes_parquet_and_csv(tmp_path: Path) -> None:
    result = _cli("--output", str(tmp_path / "sim.parquet"), "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "transactions" in result.output and "frauds" in result.output and "sim.parquet" in result.output
    back = pd.read_parquet(tmp_path / "sim.parquet")
    assert {c: str(t) for c, t in back.dtypes.items()} == CANONICAL_DTYPES
    assert len(back) == len(simulate_transactions(**SMALL, seed=3))

    result = _cli("--output", str(tmp_path / "out" / "sim.csv"), "--seed", "3", "--format", "handbook")
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(tmp_path / "out" / "sim.csv", parse_dates=["TX_DATETIME"])
    assert tuple(csv.columns) == HANDBOOK_COLUMNS
    assert len(csv) == len(back)
    assert (csv.TX_FRAUD.to_numpy() == back[records.LABEL].to_numpy(dtype=int)).all()


@pytest.mark.parametrize(("args", "message"), [
    (["--output", "sim.txt"], "suffix must be .parquet or .csv"),
    (["--output", "sim.parquet", "--customers", "0"], "--customers must be >= 1"),
    (["--output", "sim.parquet", "--days", "0"], "--days must be >= 1"),
    (["--output", "sim.parquet", "--start", "yesterday-ish"], "is not a date"),
    (["--output", "sim.parquet", "--format", "xml"], "--format must be canonical or handbook"),
])
def test_cli_bad_arguments_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / a) if a.startswith("sim.") else a for a in args]
    result = _cli(*args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())  # rich wraps long lines
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())
