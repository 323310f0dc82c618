"""The ledger on its own: budgets held in one transaction, status moves, durability, lineage, jobs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from x402_mcp.payments.ledger import BudgetExceeded, Ledger, Reservation
from x402_mcp.payments.policy import Policy

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
    assert synchronous_mode(tmp_path, ledger) == full  # restored after each relaxed update
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
