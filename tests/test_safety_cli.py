"""Offline safety at the command line: tiers, expiring admits, a cloned device, the
payee's `check`, settlement by `checkpoint`, `revoke`, `audit` and `meta`.

Commands run in-process through `main` (the console entry point) with one argument
parser built once: building it costs more than most commands. Homes use unencrypted
keys, so no passphrase is involved.

The cloned device: its home is copied with `shutil.copytree` after it was funded;
both copies pay different payees while apart, each up to the device's offline limit
and no further. Then, for every order of the device homes (`itertools.permutations`),
fresh copies of every home gossip their bundles along that order to the authority,
which revokes the device when it sees the fork and sends everything back. Every home
must show the same equivocation evidence in `status --json`, the same state hash and
balances; money is conserved; the device's balance is below zero by at most its
offline limit.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from p2p_ledger.cli import main as cli_main
from p2p_ledger.core.hlc import hlc_ms
from p2p_ledger.core.ids import Account, device_id, parse_device_id
from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.network import DEFAULT_TIERS, NetworkDescriptor, Tier
from p2p_ledger.core.records import Transfer
from p2p_ledger.core.store import MemoryStore, Verdict
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.storage.home import Home
from p2p_ledger.storage.sqlite import SqliteStore
from tests.helpers import T0, key

HOUR = 3_600_000
_PARSER = cli_main.build_parser()


def run(home: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (mock.patch.object(cli_main, "build_parser", return_value=_PARSER),
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        code = cli_main.main(["--home", str(home), *args])
    return code, out.getvalue(), err.getvalue()


def ok(home: Path, *args: str) -> str:
    code, out, err = run(home, *args)
    assert code == 0, (args, out, err)
    return out


def ok_json(home: Path, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(home, *args, "--json"))
    return data


def failed(home: Path, *args: str) -> str:
    """The one error line of a command that exited 1."""
    code, out, err = run(home, *args)
    assert code == 1, (args, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("p2p-ledger: error: "), lines
    return lines[0]


def exchange(src: Path, dst: Path, bundle: Path) -> dict[str, Any]:
    """dst takes in everything src holds (a full bundle: cheaper than a summary here)."""
    ok(src, "export", "--out", str(bundle))
    report = ok_json(dst, "import", str(bundle))
    assert report["refused"] == [], report
    assert report["not_stored_waiting"] == [], report
    return report


def records_in(home: Path) -> int:
    store = Home(home).open_store()
    try:
        return store.totals().records
    finally:
        store.close()


@dataclass
class Net:
    """A network's authority home and device homes under one directory."""

    work: Path
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def a(self) -> Path:
        return self.work / "authority"

    def home(self, name: str) -> Path:
        return self.work / name

    def account(self, name: str, sub: str = "main") -> str:
        return f"{self.ids[name]}/{sub}"


def make_net(work: Path, devices: tuple[str, ...], *tiers: str) -> Net:
    net = Net(work)
    ok(net.a, "network", "create", "--name", "Safety", "--no-passphrase", *tiers)
    ok(net.a, "network", "export", "--out", str(work / "net.json"))
    for name in devices:
        ok(net.home(name), "init", "--network", str(work / "net.json"), "--no-passphrase")
        net.ids[name] = ok(net.home(name), "id").strip()
    return net


def aed(minor: int) -> dict[str, object]:
    whole, cents = divmod(abs(minor), 100)
    return {"minor": minor, "currency": "AED",
            "display": f"{'-' if minor < 0 else ''}{whole}.{cents:02d} AED"}


# ---------------------------------------------------------------- tiers and admits

def test_network_create_writes_the_tier_table(tmp_path: Path) -> None:
    created = ok_json(tmp_path / "default", "network", "create", "--name", "D",
                      "--no-passphrase")
    assert created["tiers"][0]["per_payment"] == aed(DEFAULT_TIERS[0].per_payment)
    assert Home(tmp_path / "default").network().tiers == DEFAULT_TIERS

    custom = ok_json(tmp_path / "custom", "network", "create", "--name", "C", "--no-passphrase",
                     "--tier", "50.00:100.00:1000.00", "--tier", "500:1000.50:20000")
    assert Home(tmp_path / "custom").network().tiers == (
        Tier(per_payment=50_00, unsettled=100_00, holding=1_000_00),
        Tier(per_payment=500_00, unsettled=1_000_50, holding=20_000_00))
    assert custom["tiers"][1]["unsettled"] == aed(1_000_50)

    bare = ok_json(tmp_path / "bare", "network", "create", "--name", "B", "--no-passphrase",
                   "--no-tiers")
    network = Home(tmp_path / "bare").network()
    assert (network.tiers, bare["tiers"]) == ((), [])
    # A network without tiers keeps the id it had before tiers existed.
    assert bare["network_id"] == NetworkDescriptor(
        name="B", currency="AED", authority=network.authority).network_id.hex()
    assert "no tiers" in ok(tmp_path / "bare2", "network", "create", "--name", "B2",
                            "--no-passphrase", "--no-tiers")

    line = failed(tmp_path / "bad", "network", "create", "--name", "X", "--no-passphrase",
                  "--tier", "50.00:100.00")
    assert "expected PER:UNSETTLED:HOLDING" in line
    assert "amount" in failed(tmp_path / "bad2", "network", "create", "--name", "X",
                              "--no-passphrase", "--tier", "50.00:-1:100")
    assert not (tmp_path / "bad" / "network.json").exists()


def test_admit_with_an_expiry_and_a_tier_the_network_has(tmp_path: Path) -> None:
    net = make_net(tmp_path, ("dev",), "--tier", "50.00:100.00:1000.00")
    before = records_in(net.a)
    assert "no tier 1 (it has 1)" in failed(net.a, "admit", net.ids["dev"], "--tier", "1")
    assert "days" in failed(net.a, "admit", net.ids["dev"], "--expires", "0")
    assert "only the network authority" in failed(net.home("dev"), "admit", net.ids["dev"])
    assert records_in(net.a) == before
    admitted = ok_json(net.a, "admit", net.ids["dev"], "--expires", "2")
    store = Home(net.a).open_store()
    try:
        row = store.get(bytes.fromhex(admitted["record_id"]))
        info = store.admit(bytes.fromhex(admitted["record_id"]))
    finally:
        store.close()
    assert row is not None
    assert info is not None
    assert info.expires == admitted["expires"]
    assert info.expires - hlc_ms(row.hlc) == pytest.approx(2 * 86_400_000, abs=5_000)
    assert "expires 20" in ok(net.a, "admit", net.ids["dev"], "--expires", "0.5")


# ---------------------------------------------------------------- the cloned device

@pytest.fixture(scope="module")
def cloned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The offline phase: the clone source `till`, its copy `till2`, payees `cafe` and
    `kiosk`. The till may pay 60.00 at once and 80.00 unsettled (its admit lowers the
    tier's 100.00); it holds 120.00, so the copies together can overspend by 40.00."""
    work = tmp_path_factory.mktemp("clone")
    net = make_net(work, ("till", "cafe", "kiosk"), "--tier", "60.00:100.00:1000.00")
    ok(net.a, "admit", net.ids["till"], "--offline-limit", "80.00")
    for name in ("cafe", "kiosk"):
        ok(net.a, "admit", net.ids[name])
    ok(net.a, "issue", "--to", net.ids["till"], "--amount", "120.00")
    for name in ("till", "cafe", "kiosk"):
        exchange(net.a, net.home(name), work / "seed.bundle")
    shutil.copytree(net.home("till"), net.home("till2"))
    net.ids["till2"] = net.ids["till"]

    paid: dict[str, list[str]] = {"till": [], "till2": []}
    for copy, payee, amounts in (("till", "cafe", ("50.00", "30.00")),
                                 ("till2", "kiosk", ("60.00", "20.00"))):
        for amount in amounts:
            done = ok_json(net.home(copy), "pay", "--to", net.ids[payee], "--amount", amount)
            paid[copy].append(done["record_id"])
        # Funds are left (40.00), but not offline limit: the device will not sign.
        before = records_in(net.home(copy))
        line = failed(net.home(copy), "pay", "--to", net.ids[payee], "--amount", "0.01")
        assert "over the offline limit: 80.00 AED unsettled + 0.01 AED > 80.00 AED" in line
        assert records_in(net.home(copy)) == before
    return {"net": net, "paid": paid}


def test_payee_checks_a_payment_offline_before_the_fork_is_known(
        cloned: dict[str, Any], tmp_path: Path) -> None:
    net: Net = cloned["net"]
    cafe = tmp_path / "cafe"
    shutil.copytree(net.home("cafe"), cafe)
    exchange(net.home("till"), cafe, tmp_path / "till.bundle")
    first, second = cloned["paid"]["till"]
    answer = ok_json(cafe, "check", second)
    assert answer["ok"] is True
    assert (answer["verdict"], answer["kind"], answer["seq"]) == ("applied", "transfer", 2)
    assert (answer["payer"], answer["payee"]) == (net.account("till"), net.account("cafe"))
    assert answer["amount"] == aed(30_00)
    assert answer["exposure"] == aed(80_00)
    assert answer["limits"]["unsettled"] == aed(80_00)
    assert answer["limits"]["per_payment"] == aed(60_00)
    assert (answer["equivocations"], answer["revoked"], answer["settled"]) == ([], None, False)
    text = ok(cafe, "check", first[:12])
    assert "50.00 AED unsettled, offline limit 80.00 AED (per payment 60.00 AED)" in text
    assert text.splitlines()[-1] == "result    OK"


def _statuses(homes: list[Path]) -> list[dict[str, Any]]:
    return [ok_json(h, "status") for h in homes]


def _balances(home: Path) -> dict[Account, int]:
    replica = Home(home).replica()
    try:
        return replica.balances()
    finally:
        store = replica.store
        assert isinstance(store, SqliteStore)
        store.close()


def test_cloned_device_every_sync_order_agrees_and_loses_at_most_its_limit(
        cloned: dict[str, Any], tmp_path: Path) -> None:
    net: Net = cloned["net"]
    till = parse_device_id(net.ids["till"])
    forks = [sorted(bytes.fromhex(r[i]) for r in cloned["paid"].values()) for i in (0, 1)]
    devices = ["till", "till2", "cafe", "kiosk"]
    outcomes = set()
    for n, order in enumerate(itertools.permutations(devices)):
        run_dir = tmp_path / f"order{n}"
        homes = {name: run_dir / name for name in ("authority", *devices)}
        for name, home in homes.items():
            shutil.copytree(net.work / name, home)
        path = [homes[name] for name in order] + [homes["authority"]]
        for i, (src, dst) in enumerate(itertools.pairwise(path)):
            exchange(src, dst, run_dir / f"hop{i}.bundle")
        for name in devices:
            exchange(homes["authority"], homes[name], run_dir / "back.bundle")

        statuses = _statuses(list(homes.values()))
        assert len({s["state_hash"] for s in statuses}) == 1, order
        evidence = statuses[0]["equivocations"]
        assert all(s["equivocations"] == evidence for s in statuses)
        assert evidence == [{"author": net.ids["till"], "seq": seq, "records": [x.hex(), y.hex()]}
                            for seq, (x, y) in ((1, forks[0]), (2, forks[1]))]
        balances = [_balances(h) for h in homes.values()]
        assert all(b == balances[0] for b in balances)
        t = statuses[0]
        assert sum(balances[0].values()) == t["issued"]["minor"] - t["redeemed"]["minor"]
        loss = -balances[0][Account(device=till)]
        assert loss == 2 * 80_00 - 120_00
        assert loss <= 80_00  # the till's offline limit
        outcomes.add((t["records"], tuple(sorted(balances[0].items(), key=str))))
        if n == 0:
            first = run_dir
    assert len(outcomes) == 1  # every order: the same records count and balances

    # After the sync the payee's check sees the fork and the authority's revocation.
    first_payment = cloned["paid"]["till"][0]
    code, out, _ = run(first / "cafe", "check", first_payment, "--json")
    answer = json.loads(out)
    assert code == 1
    assert answer["verdict"] == "applied"
    assert answer["flags"] == ["equivocation", "after_revocation"]
    assert answer["revoked"]["after_seq"] == 0
    assert [e["seq"] for e in answer["equivocations"]] == [1, 2]
    assert "EQUIVOCATION known at seq 1, 2" in ok_or_one(first / "cafe", "check", first_payment)
    # And the till, revoked, can sign nothing more.
    line = failed(first / "till", "pay", "--to", net.ids["cafe"], "--amount", "1.00")
    assert "revoked" in line


def ok_or_one(home: Path, *args: str) -> str:
    code, out, err = run(home, *args)
    assert code in (0, 1), err
    return out


# ---------------------------------------------------------------- settlement

def test_checkpoint_settles_and_resets_the_offline_limit(tmp_path: Path) -> None:
    net = make_net(tmp_path, ("shop", "hub", "payee"), "--tier", "60.00:100.00:1000.00")
    ok(net.a, "admit", net.ids["shop"])
    ok(net.a, "admit", net.ids["payee"])
    ok(net.a, "admit", net.ids["hub"], "--role", "hub")
    ok(net.a, "issue", "--to", net.ids["shop"], "--amount", "300.00")
    for name in ("shop", "hub", "payee"):
        exchange(net.a, net.home(name), tmp_path / "seed.bundle")
    shop, hub = net.home("shop"), net.home("hub")
    for amount in ("60.00", "40.00"):
        ok(shop, "pay", "--to", net.ids["payee"], "--amount", amount)
    assert "over the offline limit" in failed(shop, "pay", "--to", net.ids["payee"],
                                              "--amount", "10.00")
    history = ok_json(shop, "history")
    assert [m["settled"] for m in history["movements"]] == [False, False, False]
    assert (history["settled"], history["pending"]) == (aed(0), aed(200_00))

    assert "only the network authority or a hub" in failed(shop, "checkpoint")
    exchange(shop, hub, tmp_path / "shop.bundle")
    signed = ok_json(hub, "checkpoint")
    (cp,) = signed["checkpoints"]
    assert cp["verdict"] == "applied"
    covered = {c["device_id"]: c["seq"] for c in cp["covers"]}
    # The authority's chain (3 admits, 1 issue) and the shop's; the payee signed nothing.
    assert covered == {ok(net.a, "id").strip(): 4, net.ids["shop"]: 2}
    assert ok_json(hub, "checkpoint")["checkpoints"] == []  # nothing new to cover
    exchange(hub, shop, tmp_path / "hub.bundle")

    history = ok_json(shop, "history")
    assert [m["settled"] for m in history["movements"]] == [True, True, True]
    assert (history["settled"], history["pending"]) == (aed(200_00), aed(0))
    # Settled: the next record refs the checkpoint and the exposure starts again.
    paid = ok_json(shop, "pay", "--to", net.ids["payee"], "--amount", "60.00")
    balance = ok_json(shop, "balance", net.ids["shop"])
    assert (balance["settled"], balance["pending"]) == (aed(200_00), aed(-60_00))
    assert ok_json(shop, "check", paid["record_id"])["exposure"] == aed(60_00)
    text = ok(shop, "history").splitlines()
    assert text[-2:] == ["settled 200.00 AED, pending -60.00 AED", "balance 140.00 AED"]
    assert "pending" in text[-3]
    assert "settled 200.00 AED, pending -60.00 AED" in ok(shop, "balance")

    # The payee's side: an incoming payment is settled when the payer's record is
    # (the shop's bundle carries the hub's checkpoint along).
    exchange(shop, net.home("payee"), tmp_path / "shop2.bundle")
    incoming = ok_json(net.home("payee"), "history")
    assert [(m["delta"], m["settled"]) for m in incoming["movements"]] == [
        (60_00, True), (40_00, True), (60_00, False)]
    assert (incoming["settled"], incoming["pending"]) == (aed(100_00), aed(60_00))


# ---------------------------------------------------------------- revocation

def test_revoke_and_the_payees_check(tmp_path: Path) -> None:
    net = make_net(tmp_path, ("van", "depot"))
    ok(net.a, "admit", net.ids["van"])
    ok(net.a, "admit", net.ids["depot"])
    ok(net.a, "issue", "--to", net.ids["van"], "--amount", "100.00")
    for name in ("van", "depot"):
        exchange(net.a, net.home(name), tmp_path / "seed.bundle")
    van, depot = net.home("van"), net.home("depot")
    ids = [ok_json(van, "pay", "--to", net.ids["depot"], "--amount", a)["record_id"]
           for a in ("10.00", "20.00", "30.00")]
    exchange(van, depot, tmp_path / "van.bundle")
    # Only the first two reach the authority before it revokes (default: what it holds).
    exchange(depot, net.a, tmp_path / "depot.bundle")
    assert "only the network authority" in failed(depot, "revoke", net.ids["van"])
    assert "no admit record" in failed(net.a, "revoke", device_id(bytes(key("x").verify_key)))
    revoked = ok_json(net.a, "revoke", net.ids["van"], "--after-seq", "1")
    assert (revoked["verdict"], revoked["after_seq"]) == ("applied", 1)
    exchange(net.a, depot, tmp_path / "a.bundle")

    before = ok_json(depot, "check", ids[0])
    assert (before["ok"], before["after_revocation"]) == (True, False)
    assert before["revoked"] == {"after_seq": 1, "record_id": revoked["record_id"]}
    code, out, _ = run(depot, "check", ids[2], "--json")
    after = json.loads(out)
    assert (code, after["ok"], after["flags"]) == (1, False, ["after_revocation"])
    assert after["verdict"] == "applied"  # signed before the van knew: it stands
    text = ok_or_one(depot, "check", ids[1])
    assert "REVOKED after seq 1; this record is after the cut-off" in text
    assert text.splitlines()[-1] == "result    NOT OK: after_revocation"

    exchange(net.a, van, tmp_path / "a2.bundle")
    assert "revoked after its seq 1" in failed(van, "pay", "--to", net.ids["depot"],
                                               "--amount", "1.00")
    code, out, _ = run(depot, "check", "ab" * 32, "--json")
    assert (code, json.loads(out)["held"]) == (1, False)
    assert "not a record id" in failed(depot, "check", "xyz")


# ---------------------------------------------------------------- audit

@dataclass
class Crafted:
    home: Path
    expect: dict[str, list[str]]  # record id (hex) -> flags


@pytest.fixture
def crafted(tmp_path: Path) -> Crafted:
    """A home holding a workload with known times: payments near the 100.00 cap, a
    burst, a fork, a revocation and a rejected record."""
    ak = key("audit/authority")
    network = NetworkDescriptor(name="audit", currency="AED", authority=bytes(ak.verify_key),
                                tiers=(Tier(per_payment=100_00, unsettled=1_000_00,
                                            holding=5_000_00),))
    home = Home(tmp_path / "auditor")
    home.create_key(None)
    home.set_network(network)
    replica = home.replica()
    store = replica.store
    assert isinstance(store, SqliteStore)
    names = ("alice", "bob", "carol")
    keys = {n: key(f"audit/{n}") for n in names}
    acct = {n: Account(device=bytes(k.verify_key)) for n, k in keys.items()}
    auth = Wallet(replica, ak)
    wallets = {n: Wallet(replica, k) for n, k in keys.items()}
    expect: dict[str, list[str]] = {}
    minute = 60_000
    with store.transaction():
        for n in names:
            auth.admit(acct[n].device, now_ms=T0)
            auth.issue(acct[n], 900_00, key=f"in-{n}", now_ms=T0)

        def pay(payer: str, minor: int, at: int, *flags: str) -> None:
            result = wallets[payer].pay(acct["bob" if payer != "bob" else "carol"], minor,
                                        key=f"{payer}-{at}", now_ms=at)
            assert result.verdict is Verdict.APPLIED
            expect[result.record_id.hex()] = list(flags)

        pay("alice", 95_00, T0 + 1 * minute, "near_cap")
        pay("alice", 89_99, T0 + 2 * minute)
        pay("alice", 90_00, T0 + 3 * minute, "near_cap")
        pay("alice", 10_00, T0 + 4 * minute)
        pay("alice", 10_00, T0 + 5 * minute, "burst")  # the 5th within 10 minutes
        pay("alice", 100_00, T0 + 6 * minute, "near_cap", "burst")
        pay("alice", 10_00, T0 + 30 * minute)  # a quiet spell: no burst
        over = wallets["alice"].build(
            Transfer(from_="main", to=acct["bob"], amount=100_01, key="over"),
            now_ms=T0 + 31 * minute)
        applied = replica.receive(over.raw, now_ms=T0 + 31 * minute).applied[0]
        assert applied.verdict is Verdict.REJECTED
        expect[over.hex_id] = ["rejected"]
        pay("bob", 5_00, T0 + 32 * minute)
        pay("bob", 5_00, T0 + 33 * minute, "after_revocation")
        cut = auth.revoke(acct["bob"].device, after_seq=1, now_ms=T0 + 34 * minute)
        assert cut.verdict is Verdict.APPLIED
        pay("carol", 1_00, T0 + 35 * minute)
    # carol's device is cloned: two records at her seq 2.
    twin = Wallet(Replica(network, MemoryStore()), keys["carol"])
    twin.replica.receive_many(replica.delta(twin.replica.frontier()), now_ms=T0 + HOUR)
    fork = twin.pay(acct["bob"], 2_00, key="twin", now_ms=T0 + 36 * minute)
    with store.transaction():
        pay("carol", 3_00, T0 + 37 * minute, "equivocation")
        expect[fork.record_id.hex()] = ["equivocation"]
        replica.receive_many(twin.replica.delta(replica.frontier()), now_ms=T0 + HOUR)
    store.close()
    return Crafted(home=home.path, expect=expect)


def test_audit_flags_a_crafted_workload(crafted: Crafted, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    summary = ok_json(crafted.home, "audit", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["records"] == len(rows) == 20
    flags = {r["record_id"]: r["flags"] for r in rows}
    for rid, expected in crafted.expect.items():
        assert flags[rid] == expected, (rid, rows)
    unexpected = {rid: f for rid, f in flags.items() if f and rid not in crafted.expect}
    assert unexpected == {}
    assert summary["flags"] == {"near_cap": 3, "burst": 2, "equivocation": 2,
                                "after_revocation": 1, "rejected": 1}
    by_id = {r["record_id"]: r for r in rows}
    near = next(rid for rid, f in crafted.expect.items() if f == ["near_cap"])
    row = by_id[near]
    assert (row["kind"], row["verdict"], row["amount"], row["currency"]) == (
        "transfer", "applied", 95_00, "AED")
    assert row["from"].endswith("/main")
    assert row["settled"] is False
    assert [r["seq"] for r in rows if r["kind"] == "admit"] == [1, 3, 5]
    over = next(r for r in rows if r["flags"] == ["rejected"])
    assert over["reason"] == "over the per-payment limit: 100.01 AED > 100.00 AED"

    # The same rows as CSV, and the same flags whatever the store order.
    csv_out = tmp_path / "audit.csv"
    text = ok(crafted.home, "audit", "--out", str(csv_out), "--format", "csv")
    assert text.startswith(f"wrote 20 records to {csv_out} (csv); flags: 3 near_cap, 2 burst")
    table = list(csv.DictReader(io.StringIO(csv_out.read_text(encoding="utf-8"))))
    assert [r["record_id"] for r in table] == [r["record_id"] for r in rows]
    assert {r["record_id"]: r["flags"].split(";") if r["flags"] else [] for r in table} == flags
    assert {r["settled"] for r in table} == {"no"}


# ---------------------------------------------------------------- metadata

def test_meta_is_last_writer_wins_and_shown_by_balance(tmp_path: Path) -> None:
    net = make_net(tmp_path, ("stall",))
    ok(net.a, "admit", net.ids["stall"])
    exchange(net.a, net.home("stall"), tmp_path / "seed.bundle")
    stall = net.home("stall")
    first = ok_json(stall, "meta", "--field", "name", "--value", "Fresh fruit")
    assert (first["verdict"], first["account"]) == ("applied", net.account("stall"))
    ok(stall, "meta", "--field", "name", "--value", "Fruit & veg")
    ok(stall, "meta", "--field", "city", "--value", "Sharjah", "--account", "main")
    shown = ok_json(stall, "balance", net.ids["stall"])
    assert shown["meta"] == {"city": "Sharjah", "name": "Fruit & veg"}
    exchange(stall, net.a, tmp_path / "stall.bundle")
    assert ok_json(net.a, "balance", net.ids["stall"])["meta"] == shown["meta"]
    assert "  name: Fruit & veg" in ok(net.a, "balance", net.account("stall")).splitlines()
    assert "field" in failed(stall, "meta", "--field", "x" * 40, "--value", "v")

