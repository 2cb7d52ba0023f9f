"""tools/bench/ still runs: the side-by-side benchmark at a few hundred records, with
the ledger and Yjs (pycrdt) and without Node.js. Figures are not checked (a shared
machine makes them noise); what is checked is that every system moved exactly the
records of its case and converged (the harnesses fail otherwise), that the payment
entries fed to the CRDTs are the ledger's own records, that a skipped system is said
so and never counted as meeting a target, and that RESULTS.md keeps its closing note."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

from p2p_ledger.core.records import Issue, Redeem, Transfer, parse_record

BENCH = Path(__file__).resolve().parent.parent / "tools" / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH.parent))
    monkeypatch.syspath_prepend(str(BENCH))
    return {name: importlib.import_module(name)
            for name in ("bench_ingest", "payments", "report", "run")}


def test_payment_entries_are_the_workload_records(bench: dict[str, ModuleType],
                                                  tmp_path: Path) -> None:
    raws = list(bench["bench_ingest"].Workload(devices=5).records(300))
    path = tmp_path / "payments.json"
    assert bench["payments"].write(path, raws) == 300
    entries = bench["payments"].read(path)
    assert entries == bench["payments"].entries(raws)  # JSON keeps bytes and integers
    moved = 0
    for raw, entry in zip(raws, entries, strict=True):
        body = parse_record(raw).record.body
        if isinstance(body, Transfer | Issue | Redeem):
            assert (entry["amount"], entry["key"]) == (body.amount, body.key)
            assert type(entry["amount"]) is int
            moved += 1
        if isinstance(body, Transfer):
            assert entry["payer"] == parse_record(raw).record.author
            assert entry["payee"] == body.to.device
            assert entry["memo"] == body.memo
    assert moved > 200


def test_run_without_node(bench: dict[str, ModuleType], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "RESULTS.md"
    argv = ["--quick", "--records", "200", "--delta", "30", "--ingest", "200", "--store",
            "200", "--authors", "20", "--store-repeat", "1", "--store-warmup", "0",
            "--no-automerge", "--cache-dir", str(tmp_path / "cache"), "--results",
            str(results)]
    assert bench["run"].main(argv) == 0
    out = capsys.readouterr().out
    assert "NOTE: Automerge is not measured: skipped by --no-automerge" in out
    result = json.loads(out.strip().splitlines()[-1])

    rows = {(r["system"], r["case"]): r for r in result["rows"]}
    assert set(rows) == {(s, c) for s in ("ledger", "yjs") for c in ("full", "delta")}
    for (_, case), row in rows.items():
        assert row["records_moved"] == (200 if case == "full" else 30)
        assert row["wire_bytes"] > 0
        assert row["wall_s"] > 0
        assert row["peak_rss_mb"] > 5
    assert rows[("yjs", "delta")]["round_trips"] == 1
    assert rows[("ledger", "full")]["verify_s"] > 0
    # Node A served from its own process: both sides' CPU is measured apart
    for case in ("full", "delta"):
        assert rows[("ledger", case)]["cpu_b_s"] > 0
        assert rows[("ledger", case)]["cpu_a_s"] > 0
    assert "cpu_b_s" not in rows[("yjs", "full")]
    # PACKED frames: fewer bytes than the records' signed form, but every signature
    full = rows[("ledger", "full")]
    assert 64 * full["records_moved"] < full["wire_bytes"] < full["record_bytes"]
    assert result["summary"]["authors"] == 21  # the devices and the authority
    assert result["ingest"]["records"] == 200
    assert result["store"]["records"] == 200

    verdicts = {t["name"]: t["met"] for t in result["targets"]}
    assert len(verdicts) == 10
    for name, met in verdicts.items():
        assert (met is None) == ("Automerge" in name), name

    text = results.read_text()
    assert "| delta wire bytes: ledger / Automerge | - | <= 0.40x | n/a (skipped by" in text
    assert "yjs        delta" in text


def test_results_keep_the_closing_note(bench: dict[str, ModuleType], tmp_path: Path) -> None:
    report = bench["report"]
    path = tmp_path / "RESULTS.md"
    result = {"machine": {"date": "today"}, "rows": []}
    report.write_results(path, result, [], ["table"], "cmd", ["method"])
    assert report.DEFAULT_NOTE in path.read_text()
    path.write_text(path.read_text().replace(report.DEFAULT_NOTE, "Bounded by SQLite."))
    report.write_results(path, result, [], ["table 2"], "cmd", ["method"])
    text = path.read_text()
    assert "Bounded by SQLite." in text
    assert report.DEFAULT_NOTE not in text
    assert "table 2" in text
