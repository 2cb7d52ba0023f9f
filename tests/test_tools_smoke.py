"""The benchmarks in tools/ still run: each main() at a few hundred records, with its
cache in a temporary directory. The figures are not checked (a shared machine makes
them noise), but what the tools assert about the ledger is: every generated record
verifies and comes out `applied`, and the CLI answers about the whole store."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.store import MemoryStore, Verdict
from tests.helpers import T0

TOOLS = Path(__file__).resolve().parent.parent / "tools"


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    monkeypatch.syspath_prepend(str(TOOLS))
    return {name: importlib.import_module(name) for name in ("bench_ingest", "bench_store")}


def last_json(out: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def test_workload_is_valid_and_deterministic(tools: dict[str, ModuleType]) -> None:
    bench = tools["bench_ingest"]
    first = list(bench.Workload(devices=5).records(400))
    assert first == list(bench.Workload(devices=5).records(400))
    assert len(first) == len(set(first)) == 400
    work = bench.Workload(devices=5)
    replica = Replica(work.network, MemoryStore())
    report = replica.receive_many(work.records(400), now_ms=T0 + 10**6)
    assert len(report.applied) == 400
    assert {a.verdict for a in report.applied} == {Verdict.APPLIED}
    assert replica.conserved()
    assert set(work.kinds) == {"admit", "issue", "transfer", "redeem", "meta"}
    assert work.kinds["transfer"] > 400 // 2


def test_bench_ingest_main(tools: dict[str, ModuleType], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--records", "300", "--cache-dir", str(tmp_path), "--profile"]
    assert tools["bench_ingest"].main(argv) == 0
    out = capsys.readouterr().out
    result = last_json(out)
    assert result["records"] == 300
    assert sum(result["kinds"].values()) == 300  # type: ignore[attr-defined]
    assert result["baseline_per_s"] > 0  # type: ignore[operator]
    assert result["ingest_per_s"] > 0  # type: ignore[operator]
    assert "cumulative" in out
    assert len(list(tmp_path.glob("*.bundle"))) == 1
    assert tools["bench_ingest"].main([*argv[:-1], "--btree"]) == 0  # the cached bundle
    out = capsys.readouterr().out
    assert "(cached)" in out
    entries = last_json(out)["btree_entries"]
    assert isinstance(entries, dict)
    assert entries["records"] == entries["sqlite_autoindex_records_1"] == 300  # a row each
    assert entries["records_author_seq"] == 300


def test_bench_store_main(tools: dict[str, ModuleType], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--records", "300", "--repeat", "1", "--warmup", "0", "--batch", "120",
            "--cache-dir", str(tmp_path)]
    assert tools["bench_store"].main(argv) == 0
    result = last_json(capsys.readouterr().out)
    assert result["records"] == 300
    for name in ("baseline", "status", "balance_one", "balance_all"):
        assert result[f"{name}_s"] > 0  # type: ignore[operator]
        assert result[f"{name}_rss_mb"] > 5  # type: ignore[operator]
    homes = list(tmp_path.glob("store-*"))
    assert len(homes) == 1
    assert (homes[0] / "complete.json").exists()


def test_bench_cloud_main(tools: dict[str, ModuleType], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """A throwaway PostgreSQL (tools/pg_local.py), 300 records through the SQLite node and
    1 and 2 front-ends - the run fails unless all are applied and the stores agree - and
    the delta query on a bulk-built 2,000-record store, checked against the ledger's."""
    bench = importlib.import_module("bench_cloud")
    argv = ["--records", "300", "--frame", "100", "--store", "2000", "--lacking", "100",
            "--cache", str(tmp_path)]
    assert bench.main(argv) == 0
    result = last_json(capsys.readouterr().out)
    assert result["records"] == 300
    rates = result["rates"]
    assert isinstance(rates, dict)
    assert set(rates) == {"verify", "sqlite node", "1 front-end", "2 front-ends"}
    delta = result["delta"]
    assert isinstance(delta, dict)
    assert (delta["records"], delta["lacking"]) == (2000, 100)
