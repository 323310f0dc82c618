"""The ledger on its own: budgets held in one transaction, status moves, durability, lineage, jobs."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from x402_mcp.payments.ledger import BudgetExceeded, Ledger, Reservation
from x402_mcp.payments.policy import Policy, Spending

POLICY = Policy(max_per_call=100_000, daily_budget=50_000, total_budget=None, confirm_above=100_000)


def reservation(nonce: int, amount: int = 20_000) -> Reservation:
    return Reservation(
        tool="image_edit",
        url="http://127.0.0.1:9/image-edit",
        request_digest="d" * 64,
        requirement={"scheme": "exact"},
        x402_version=1,
        amount=amount,
        network="base",
        asset="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        pay_to="0x5A4dB0c500000000000000000000000000000402",
        payer="0x1111111111111111111111111111111111111111",
        nonce=f"0x{nonce:064x}",
        valid_before=2_000_000_000,
    )


def synchronous_mode(path: Path, ledger: Ledger) -> int:
    return int(ledger._db.execute("PRAGMA synchronous").fetchone()[0])


def test_signed_rows_hold_the_budget_and_released_rows_give_it_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    first = ledger.record_signed(reservation(1), "0xsig", POLICY)
    second = ledger.record_signed(reservation(2), "0xsig", POLICY)
    with pytest.raises(BudgetExceeded, match=r"daily budget 0\.05 USDC reached"):
        ledger.record_signed(reservation(3), "0xsig", POLICY)
    assert ledger.spending().today == 40_000
    ledger.mark_released(second, "failure receipt")
    assert ledger.spending().today == 20_000
    ledger.record_signed(reservation(3), "0xsig", POLICY)
    ledger.mark_unknown(first, "no answer")
    assert ledger.spending().today == 40_000  # unknown still counts
    ledger.mark_settled(first, "0xtx")
    assert ledger.get(first).status == "settled" and ledger.get(first).transaction_hash == "0xtx"
    # A later, weaker "no answer" never overrides the settled outcome.
    ledger.mark_unknown(first, "late")
    assert ledger.get(first).status == "settled"
    with pytest.raises(sqlite3.IntegrityError):
        ledger.record_signed(reservation(1, amount=1), "0xsig", POLICY)  # a nonce is recorded once
    ledger.close()


def test_only_the_signed_record_waits_for_the_disk(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    full = 2
    assert synchronous_mode(tmp_path, ledger) == full
    payment = ledger.record_signed(reservation(1), "0xsig", POLICY)
    ledger.mark_settled(payment, "0xtx")
    ledger.record_output(payment, image_url="http://127.0.0.1:9/a.png")
    assert synchronous_mode(tmp_path, ledger) == full  # the signed record's connection never relaxes
    normal = 1
    assert int(ledger._relaxed.execute("PRAGMA synchronous").fetchone()[0]) == normal
    reopened = Ledger(tmp_path / "l.sqlite3")  # what the relaxed connection wrote is there for a new reader
    row = reopened.get(payment)
    assert row.status == "settled" and row.transaction_hash == "0xtx" and row.image_url == "http://127.0.0.1:9/a.png"
    reopened.close()
    ledger.close()


def test_lineage_and_outputs(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    root = ledger.record_signed(reservation(1, 1), "0xsig", POLICY)
    ledger.record_output(root, image_url="http://127.0.0.1:9/a.png", output_sha256="a" * 64)
    child = ledger.record_signed(reservation(2, 1), "0xsig", POLICY)
    ledger.record_output(child, image_url="http://127.0.0.1:9/b.png", parent_id=root, prompt="warmer")
    other = ledger.record_signed(reservation(3, 1), "0xsig", POLICY)
    assert ledger.find_output(image_url="http://127.0.0.1:9/b.png") == child
    assert ledger.find_output(sha256="a" * 64) == root
    assert [row.id for row in ledger.lineage(child)] == [root, child]
    assert [row.id for row in ledger.lineage(root)] == [root, child]
    assert [row.id for row in ledger.lineage(other)] == [other]
    assert ledger.lineage(999) == []
    ledger.close()


def test_jobs_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(path)
    payment = ledger.record_signed(reservation(1), "0xsig", POLICY)
    ledger.add_job("job-1", payment, "image_inpaint", "http://127.0.0.1:9/jobs/job-1", save=True)
    ledger.close()
    reopened = Ledger(path)
    job = reopened.get_job("job-1")
    assert job is not None and job.status == "running" and job.payment_id == payment and job.save
    reopened.update_job("job-1", "succeeded", {"image_url": "http://127.0.0.1:9/c.png"})
    job = reopened.get_job("job-1")
    assert job is not None and job.result == {"image_url": "http://127.0.0.1:9/c.png"}
    assert reopened.get_job("nope") is None
    reopened.close()


def summed_by_day(ledger: Ledger) -> dict[str, int]:
    """The budgets' figures the slow way: summing the payments themselves."""
    rows = ledger._db.execute(
        "SELECT day, SUM(amount) FROM payments WHERE status IN ('reserved', 'signed', 'settled', 'unknown') "
        "GROUP BY day"
    )
    return {day: amount for day, amount in rows}


def kept_by_day(ledger: Ledger) -> dict[str, int]:
    return {day: amount for day, amount in ledger._db.execute("SELECT day, amount FROM counted_by_day") if amount}


def test_the_per_day_totals_follow_every_status_move(tmp_path: Path) -> None:
    import random

    rng = random.Random(402)
    now = [1_750_000_000.0]
    ledger = Ledger(tmp_path / "l.sqlite3", clock=lambda: now[0])
    unlimited = Policy(max_per_call=10**9, daily_budget=10**15, total_budget=None, confirm_above=10**9)
    moves = (ledger.mark_settled, ledger.mark_released, ledger.mark_unknown)
    ids: list[int] = []
    for step in range(400):
        if step % 50 == 0:
            now[0] += 86_400 * rng.choice((0, 1))  # some days get several rows, across midnight
        if not ids or rng.random() < 0.4:
            ids.append(ledger.record_signed(reservation(step + 1, rng.randint(1, 90_000)), "0xsig", unlimited))
            continue
        payment, move = rng.choice(ids), rng.choice(moves)
        with contextlib.suppress(LookupError):  # a move the ledger refuses changes nothing
            move(payment, "0xtx" if move is ledger.mark_settled else "moved")  # type: ignore[operator]
        assert kept_by_day(ledger) == summed_by_day(ledger), f"after step {step}"
    ledger._db.execute("DELETE FROM payments WHERE id = ?", (ids[0],))
    assert kept_by_day(ledger) == summed_by_day(ledger)
    today = summed_by_day(ledger).get(ledger._db.execute("SELECT MAX(day) FROM payments").fetchone()[0], 0)
    assert ledger.spending() == Spending(today=today, total=sum(summed_by_day(ledger).values()))
    assert len(summed_by_day(ledger)) > 1
    ledger.close()


def test_a_ledger_from_before_the_per_day_totals_is_counted_on_opening(tmp_path: Path) -> None:
    from x402_mcp.payments import ledger as ledger_module

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(ledger_module.SCHEMA)  # the schema as it was: payments, jobs, indexes, no totals,
    old.execute("CREATE INDEX payments_day ON payments(day, status)")  # and the index budget reads used
    columns = (
        "created_at, updated_at, day, tool, url, request_digest, requirement, x402_version, amount, network, "
        "asset, pay_to, payer, nonce, valid_before, status"
    )
    for nonce, (day, amount, status) in enumerate(
        [("2026-11-20", 10_000, "settled"), ("2026-11-21", 20_000, "unknown"), ("2026-11-21", 5_000, "released")]
    ):
        old.execute(
            f"INSERT INTO payments ({columns}) "
            "VALUES (0, 0, ?, 't', 'u', 'd', '{}', 1, ?, 'base', 'a', 'p', 'f', ?, 0, ?)",
            (day, amount, f"0x{nonce:064x}", status),
        )
    old.commit()
    old.close()
    reopened = Ledger(path, clock=lambda: 1_795_262_400.0)  # 2026-11-21 UTC
    assert reopened.spending().today == 20_000 and reopened.spending().total == 30_000
    assert kept_by_day(reopened) == summed_by_day(reopened) == {"2026-11-20": 10_000, "2026-11-21": 20_000}
    indexes = {row[0] for row in reopened._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "payments_day" not in indexes and "payments_status" in indexes
    reopened.close()
    again = Ledger(path, clock=lambda: 1_795_262_400.0)  # counted once, not twice
    assert again.spending().total == 30_000
    again.close()
