"""The ledger on its own: budgets held in one transaction, the state machine, durability, lineage, jobs."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from x402_mcp.payments.ledger import SCHEMA_VERSION, BudgetExceeded, Ledger, LedgerStore, SignedPayment
from x402_mcp.payments.policy import Policy, Spending

POLICY = Policy(max_per_call=100_000, daily_budget=50_000, total_budget=None, confirm_above=100_000)


def signed(nonce: int, amount: int = 20_000) -> SignedPayment:
    return SignedPayment(
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
        signature="0xsig",
        payment_identifier=f"pay_{nonce:032x}",
    )


def test_every_unproven_outcome_holds_the_budget_and_only_expired_gives_it_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    first = ledger.record_signed(signed(1), POLICY)
    second = ledger.record_signed(signed(2), POLICY)
    with pytest.raises(BudgetExceeded, match=r"daily budget 0\.05 USDC reached"):
        ledger.record_signed(signed(3), POLICY)
    assert ledger.spending().today == 40_000
    # A failure receipt is the upstream's word: the authorization is still out, so it still counts.
    assert ledger.mark_declined(second, "failure receipt (the upstream's word): insufficient_funds")
    assert ledger.get(second).status == "declined"
    assert ledger.spending().today == 40_000
    with pytest.raises(BudgetExceeded):
        ledger.record_signed(signed(3), POLICY)
    # Proven unusable (past validBefore, unused on chain): only this gives the budget back.
    assert ledger.mark_expired(second, "expired unused (authorizationState false)")
    assert ledger.spending().today == 20_000
    ledger.record_signed(signed(3), POLICY)
    assert ledger.mark_unknown(first, "no answer")
    assert ledger.spending().today == 40_000  # unknown still counts
    assert ledger.mark_settled(first, "0xtx")
    assert ledger.get(first).status == "settled" and ledger.get(first).transaction_hash == "0xtx"
    # Later, weaker words never override stronger ones.
    assert not ledger.mark_unknown(first, "late")
    assert not ledger.mark_declined(first, "late failure receipt")
    assert not ledger.mark_expired(first, "late")
    assert ledger.get(first).status == "settled"
    assert not ledger.mark_settled(second, "0xlate")  # expired is final
    assert ledger.get(second).status == "expired"
    with pytest.raises(LookupError):
        ledger.mark_unknown(999, "no such row")
    with pytest.raises(sqlite3.IntegrityError):
        ledger.record_signed(signed(1, amount=1), POLICY)  # a nonce is recorded once
    ledger.close()


def test_one_connection_and_every_write_waits_for_the_disk(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    payment = ledger.record_signed(signed(1), POLICY)
    ledger.mark_settled(payment, "0xtx")
    ledger.record_output(payment, image_url="http://127.0.0.1:9/a.png")
    full = 2
    assert int(ledger._db.execute("PRAGMA synchronous").fetchone()[0]) == full
    reopened = Ledger(tmp_path / "l.sqlite3")
    row = reopened.get(payment)
    assert row.status == "settled" and row.transaction_hash == "0xtx" and row.image_url == "http://127.0.0.1:9/a.png"
    reopened.close()
    ledger.close()


def test_lineage_and_outputs(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    root = ledger.record_signed(signed(1, 1), POLICY)
    ledger.record_output(root, image_url="http://127.0.0.1:9/a.png", output_sha256="a" * 64)
    child = ledger.record_signed(signed(2, 1), POLICY)
    ledger.record_output(child, image_url="http://127.0.0.1:9/b.png", parent_id=root, prompt="warmer")
    other = ledger.record_signed(signed(3, 1), POLICY)
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
    payment = ledger.record_signed(signed(1), POLICY)
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
        "SELECT day, SUM(amount) FROM payments WHERE status IN ('signed', 'unknown', 'declined', 'settled') "
        "GROUP BY day"
    )
    return {day: amount for day, amount in rows}


def kept_by_day(ledger: Ledger) -> dict[str, int]:
    return {day: amount for day, amount in ledger._db.execute("SELECT day, amount FROM counted_by_day") if amount}


def summed_by(ledger: Ledger, column: str) -> list[dict[str, int | str]]:
    """The per-tool or per-user report the slow way: grouping the payments themselves."""
    rows = ledger._db.execute(
        f"SELECT {column}, COUNT(*), SUM(amount), SUM(status = 'settled'), "
        "SUM(status IN ('signed', 'unknown', 'declined')) FROM payments "
        f"WHERE status IN ('signed', 'unknown', 'declined', 'settled') GROUP BY {column} ORDER BY {column}"
    )
    keys = (column, "calls", "amount", "settled", "pending")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def move_at_random(ledger: LedgerStore, payment_id: int, rng: random.Random) -> None:
    """One of the state machine's moves, settling twice as often as each other one (as payments do)."""
    move = rng.choice(("settled", "settled", "declined", "unknown", "expired"))
    if move == "settled":
        ledger.mark_settled(payment_id, "0x" + "ab" * 32)
    elif move == "declined":
        ledger.mark_declined(payment_id, "moved")
    elif move == "unknown":
        ledger.mark_unknown(payment_id, "moved")
    else:
        ledger.mark_expired(payment_id, "moved")


def test_the_kept_totals_follow_every_status_move(tmp_path: Path) -> None:
    """Per day (the budgets) and per tool and user (the reports, the dashboard), after every move."""
    import dataclasses

    rng = random.Random(402)
    now = [1_750_000_000.0]
    ledger = Ledger(tmp_path / "l.sqlite3", clock=lambda: now[0])
    unlimited = Policy(max_per_call=10**9, daily_budget=10**15, total_budget=None, confirm_above=10**9)
    ids: list[int] = []
    for step in range(400):
        if step % 50 == 0:
            now[0] += 86_400 * rng.choice((0, 1))  # some days get several rows, across midnight
        if not ids or rng.random() < 0.4:
            payment = dataclasses.replace(
                signed(step + 1, rng.randint(1, 90_000)), tool=rng.choice(("image_edit", "image_generate"))
            )
            ids.append(ledger.record_signed(payment, unlimited, user=rng.choice(("", "ann", "bob"))))
            continue
        move_at_random(ledger, rng.choice(ids), rng)
        assert kept_by_day(ledger) == summed_by_day(ledger), f"after step {step}"
        assert ledger.report("tool") == summed_by(ledger, "tool"), f"after step {step}"
        assert ledger.report("user") == summed_by(ledger, "user_name"), f"after step {step}"
    for payment in (ids[0], next(i for i in ids if ledger.get(i).status == "settled")):
        ledger._db.execute("DELETE FROM jobs WHERE payment_id = ?", (payment,))
        ledger._db.execute("DELETE FROM payments WHERE id = ?", (payment,))
        assert kept_by_day(ledger) == summed_by_day(ledger)
        assert ledger.report("tool") == summed_by(ledger, "tool")
        assert ledger.report("user") == summed_by(ledger, "user_name")
    today = summed_by_day(ledger).get(ledger._db.execute("SELECT MAX(day) FROM payments").fetchone()[0], 0)
    assert ledger.spending().today == today and ledger.spending().total == sum(summed_by_day(ledger).values())
    assert len(summed_by_day(ledger)) > 1
    # Every tool and user was paid for, and some of each settled and some did not.
    report = ledger.report("user")
    assert [row["user_name"] for row in report] == ["", "ann", "bob"]
    assert all(row["settled"] and row["pending"] for row in report), report
    ledger.close()


# The payments table as ledgers before the state machine wrote it (user_version 0 and 1).
V1_PAYMENTS = """
CREATE TABLE payments (
    id INTEGER PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL, day TEXT NOT NULL,
    tool TEXT NOT NULL, url TEXT NOT NULL, request_digest TEXT NOT NULL, requirement TEXT NOT NULL,
    x402_version INTEGER NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0), network TEXT NOT NULL,
    asset TEXT NOT NULL, pay_to TEXT NOT NULL, payer TEXT NOT NULL, nonce TEXT NOT NULL UNIQUE,
    valid_before INTEGER NOT NULL, signature TEXT,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'signed', 'settled', 'released', 'unknown')),
    transaction_hash TEXT, note TEXT, image_url TEXT, output_path TEXT, output_sha256 TEXT,
    parent_id INTEGER REFERENCES payments(id), prompt TEXT
);
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, payment_id INTEGER NOT NULL REFERENCES payments(id), tool TEXT NOT NULL,
    status_url TEXT NOT NULL, status TEXT NOT NULL, save INTEGER NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, result TEXT
);
CREATE INDEX payments_day ON payments(day, status);
"""


def test_an_older_ledger_is_moved_to_the_state_machine_once_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(V1_PAYMENTS)
    columns = (
        "created_at, updated_at, day, tool, url, request_digest, requirement, x402_version, amount, network, "
        "asset, pay_to, payer, nonce, valid_before, status, note"
    )
    rows = [
        ("2026-11-20", 10_000, "settled", None),
        ("2026-11-21", 20_000, "unknown", "no answer"),
        ("2026-11-21", 5_000, "released", "failure receipt: insufficient_funds"),  # the upstream's word
        ("2026-11-21", 7_000, "released", "expired unused (authorizationState false)"),  # proven by the chain
        ("2026-11-21", 3_000, "reserved", None),  # may have been signed: checked on chain again
    ]
    for nonce, (day, amount, status, note) in enumerate(rows):
        old.execute(
            f"INSERT INTO payments ({columns}) "
            "VALUES (0, 0, ?, 't', 'u', 'd', '{}', 1, ?, 'base', 'a', 'p', 'f', ?, 0, ?, ?)",
            (day, amount, f"0x{nonce:064x}", status, note),
        )
    old.execute("INSERT INTO jobs VALUES ('job-1', 2, 't', 'http://127.0.0.1:9/jobs/1', 'running', 1, 0, 0, NULL)")
    old.commit()
    old.close()
    reopened = Ledger(path, clock=lambda: 1_795_262_400.0)  # 2026-11-21 UTC
    assert [row.status for row in reversed(reopened.recent())] == [
        "settled",
        "unknown",
        "declined",
        "expired",
        "signed",
    ]
    assert reopened.spending() == Spending(today=28_000, total=38_000, user_today=28_000)  # old rows: user ""
    assert kept_by_day(reopened) == summed_by_day(reopened) == {"2026-11-20": 10_000, "2026-11-21": 28_000}
    indexes = {row[0] for row in reopened._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "payments_day" not in indexes and "payments_status" in indexes
    job = reopened.get_job("job-1")
    assert job is not None and job.payment_id == 2
    assert int(reopened._db.execute("PRAGMA foreign_keys").fetchone()[0]) == 1
    reopened.mark_declined(2, "works in the new table")
    reopened.close()
    again = Ledger(path, clock=lambda: 1_795_262_400.0)  # migrated and counted once, not twice
    assert again.spending().total == 38_000
    again.close()


def test_a_version_2_ledger_gains_the_payment_identifier_column(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    old = sqlite3.connect(path)
    v2 = V1_PAYMENTS.replace("'reserved', 'signed', 'settled', 'released', 'unknown'", STATUSES_V2)
    old.executescript(v2.replace("CREATE INDEX payments_day ON payments(day, status);", ""))
    old.execute(
        "INSERT INTO payments (created_at, updated_at, day, tool, url, request_digest, requirement, x402_version, "
        "amount, network, asset, pay_to, payer, nonce, valid_before, status) "
        "VALUES (0, 0, '2026-11-21', 't', 'u', 'd', '{}', 2, 9000, 'base', 'a', 'p', 'f', '0x01', 0, 'declined')"
    )
    old.execute("PRAGMA user_version = 2")
    old.commit()
    old.close()
    ledger = Ledger(path, clock=lambda: 1_795_262_400.0)  # 2026-11-21 UTC
    try:
        (row,) = ledger.recent()
        assert row.status == "declined" and row.payment_identifier is None
        assert ledger.spending().today == 9000
        new = ledger.record_signed(signed(2, 1000), POLICY)
        assert ledger.get(new).payment_identifier == f"pay_{2:032x}"
        assert int(ledger._db.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION
    finally:
        ledger.close()


STATUSES_V2 = "'signed', 'unknown', 'declined', 'settled', 'expired'"


def schema_of(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall())


def test_a_version_4_ledger_gains_versions_5_and_6_once(tmp_path: Path) -> None:
    """The indexes for newest-first pages, jobs.finish and the kept per-tool/user totals; the rows as they
    were; a second open changes nothing."""
    from x402_mcp.payments.ledger import sqlite as backend

    path = tmp_path / "v4.sqlite3"
    old = sqlite3.connect(path)
    v4_payments = backend._payments_table("payments").replace(",\n    model           TEXT", "")
    assert "model" not in v4_payments
    v4 = v4_payments + ";" + V1_PAYMENTS.split(");", 1)[1]  # v4 payments (no model column), v4 jobs
    old.executescript(v4.replace("CREATE INDEX payments_day ON payments(day, status);", ""))
    old.execute(
        "INSERT INTO payments (created_at, updated_at, day, tool, url, request_digest, requirement, x402_version, "
        "amount, network, asset, pay_to, payer, nonce, valid_before, status, user_name) VALUES (0, 0, "
        "'2026-11-21', 'image_generate', 'u', 'd', '{}', 2, 9000, 'base', 'a', 'p', 'f', '0x01', 0, 'settled', 'ann')"
    )
    old.execute(
        "INSERT INTO jobs VALUES ('job-4', 1, 'image_generate', 'http://127.0.0.1:9/j', 'running', 1, 0, 0, NULL)"
    )
    old.execute("PRAGMA user_version = 4")
    old.commit()
    old.close()

    ledger = Ledger(path, clock=lambda: 1_795_262_400.0)  # 2026-11-21 UTC
    try:
        assert int(ledger._db.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION == 6
        # The old row is in the kept totals, summed once by the migration.
        assert ledger.report("user") == [{"user_name": "ann", "calls": 1, "amount": 9000, "settled": 1, "pending": 0}]
        job = ledger.get_job("job-4")
        assert job is not None and job.finish is None and job.payment_id == 1
        ledger.add_job("job-5", 1, "image_inpaint", "http://127.0.0.1:9/k", save=True, finish={"blur": 4})
        job = ledger.get_job("job-5")
        assert job is not None and job.finish == {"blur": 4}
        assert ledger.spending("ann") == Spending(today=9000, total=9000, user_today=9000)
        assert ledger.get(1).model is None
        ledger.record_output(1, model="gpt-image-2")
        assert ledger.get(1).model == "gpt-image-2"
        plans = {
            column: " ".join(
                str(row[3]) for row in ledger._db.execute(f"EXPLAIN QUERY PLAN SELECT * FROM payments {where}")
            )
            for column, where in (
                ("tool", "WHERE tool = 'x' ORDER BY id DESC LIMIT 5"),
                ("user_name", "WHERE user_name = 'x' ORDER BY id DESC LIMIT 5"),
                ("day", "WHERE day = 'x' ORDER BY id DESC LIMIT 5"),
                ("parent_id", "WHERE parent_id = 1"),
            )
        }
    finally:
        ledger.close()
    # Each page is read from its index, in order: no scan of the table, no sort.
    assert "payments_tool_id" in plans["tool"] and "TEMP B-TREE" not in plans["tool"], plans
    assert "payments_user_id" in plans["user_name"] and "TEMP B-TREE" not in plans["user_name"], plans
    assert "payments_day_id" in plans["day"] and "TEMP B-TREE" not in plans["day"], plans
    assert "payments_parent" in plans["parent_id"], plans  # an edit chain's later versions

    before = schema_of(path)
    again = Ledger(path, clock=lambda: 1_795_262_400.0)
    try:
        assert again._db.total_changes == 0  # returned at the version check: nothing rewritten, nothing recounted
        assert again.spending("ann").total == 9000
        assert again.get_job("job-5") is not None
    finally:
        again.close()
    assert schema_of(path) == before
