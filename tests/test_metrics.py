"""`serve --metrics`: a real `serve` on 127.0.0.1 scraped over HTTP and read with
prometheus_client's own text parser, after real syncs; `/healthz`; `status` showing
the same live figures; and the progress bar of `sync` on a terminal.

Uses the homes of test_integration (an authority, a hub and two funded devices).
"""

from __future__ import annotations

import io
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2p_ledger.cli import live, progress
from p2p_ledger.cli.main import main
from p2p_ledger.core.ids import device_id
from tests import test_integration
from tests.test_integration import cli, device_of, ok_json, pay, peek, serving

template = test_integration.template  # the fixtures: four homes, copied for each test
homes = test_integration.homes

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def held(home: Path) -> int:
    return int(peek(home, lambda r: r.store.totals().records))


def test_metrics_after_syncs(homes: dict[str, Path]) -> None:
    hub, dev1, dev2 = homes["hub"], homes["dev1"], homes["dev2"]
    with serving(hub, "--listen", "127.0.0.1:0", "--hub", "--metrics", "127.0.0.1:0") as srv:
        base = srv.wait_line(r"metrics on (http://127\.0\.0\.1:\d+)/metrics").group(1)
        port = srv.port()
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as answer:
            assert (answer.status, answer.read()) == (200, b"ok\n")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nothing", timeout=10)
        assert missing.value.code == 404
        missing.value.close()
        before = held(hub)
        m = scrape(f"{base}/metrics")
        assert value(m, "p2p_ledger_records_held") == before
        assert value(m, "p2p_ledger_records_stored_total", source="peer") == 0
        assert value(m, "p2p_ledger_sessions_ended_total") == 0

        pay(dev1, dev2, "12.50", "m-1")
        out1 = ok_json(dev1, "sync", f"tcp://127.0.0.1:{port}")
        assert out1["records_out"] == 1
        m = scrape(f"{base}/metrics")
        assert value(m, "p2p_ledger_records_held") == before + 1
        assert value(m, "p2p_ledger_records_stored_total", source="peer") == 1
        assert value(m, "p2p_ledger_sessions_ended_total") == 1
        assert value(m, "p2p_ledger_received_bytes_total") == out1["bytes_out"]
        assert value(m, "p2p_ledger_sent_bytes_total") == out1["bytes_in"]
        d1 = device_id(device_of(dev1))
        assert value(m, "p2p_ledger_peer_lag_records", peer=d1) == 0
        assert value(m, "p2p_ledger_pending_records") == 0
        assert value(m, "p2p_ledger_verifier_queue") == 0

        pay(dev2, dev1, "1.00", "m-2")
        out2 = ok_json(dev2, "sync", f"tcp://127.0.0.1:{port}")
        assert (out2["records_out"], out2["records_in"]) == (1, 1)
        m = scrape(f"{base}/metrics")
        assert value(m, "p2p_ledger_records_stored_total", source="peer") == 2
        assert value(m, "p2p_ledger_peer_lag_records", peer=d1) == 1  # dev2's record
        assert value(m, "p2p_ledger_peer_lag_records", peer=device_id(device_of(dev2))) == 0
        assert value(m, "p2p_ledger_received_bytes_total") == (out1["bytes_out"]
                                                              + out2["bytes_out"])

        # a record signed on the hub's home by another process, found by the store poll
        assert cli(hub, "meta", "--field", "name", "--value", "Hub 7").returncode == 0
        for _ in range(50):
            m = scrape(f"{base}/metrics")
            if value(m, "p2p_ledger_records_stored_total", source="home") == 1:
                break
            time.sleep(0.1)  # the node polls its store every 0.2 s
        assert value(m, "p2p_ledger_records_stored_total", source="home") == 1

        # a peer that sends junk: its session is closed, and counted by reason
        with socket.create_connection(("127.0.0.1", port), timeout=10) as junk:
            for _ in range(50):  # connected, no HELLO yet: one session, peer unknown
                m = scrape(f"{base}/metrics")
                if (("p2p_ledger_sessions", (("role", "unknown"), ("state", "hello"))) in m):
                    break
                time.sleep(0.1)
            assert value(m, "p2p_ledger_sessions", state="hello", role="unknown") == 1
            junk.sendall(b"\xff" * 64)
            junk.settimeout(10)
            while junk.recv(4096):
                pass
        for _ in range(50):
            m = scrape(f"{base}/metrics")
            refused = sum(v for (n, _), v in m.items() if n == "p2p_ledger_frames_refused_total")
            if refused:
                break
            time.sleep(0.1)  # the node polls its store every 0.2 s
        assert refused == 1

        # status shows the same figures, read from the running node
        status = ok_json(hub, "status")
        figures = status["live"]
        assert figures["metrics"] == f"{base}/metrics"
        assert figures["records_held"] == held(hub)
        assert figures["records_stored"] == {"peer": 2, "home": 1}
        assert figures["peer_lag_records"][d1] == 2
        assert sum(figures["frames_refused"].values()) == 1
        text = cli(hub, "status").stdout
        assert f"metrics {base}/metrics" in text
        assert "stored since start: 1 home, 2 peer" in text
    assert not (hub / live.FILE).exists()
    assert ok_json(hub, "status")["live"] is None
    assert "serving      no" in cli(hub, "status").stdout


def test_metrics_on_an_address_in_use_is_one_clean_error(homes: dict[str, Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli(homes["hub"], "serve", "--listen", "127.0.0.1:0", "--metrics",
                   f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"p2p-ledger: error: cannot listen on http://127.0.0.1:{port}: Address already in use")
    assert not (homes["hub"] / live.FILE).exists()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sync_draws_a_bar_on_a_terminal_only(homes: dict[str, Path],
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(progress, "DELAY", 0.0)
    hub, dev1 = homes["hub"], homes["dev1"]
    with serving(hub, "--listen", "127.0.0.1:0") as srv:
        url = f"tcp://127.0.0.1:{srv.port()}"
        assert main(["--home", str(dev1), "sync", url]) == 0
        assert capsys.readouterr().err == ""  # not a terminal: nothing
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert main(["--home", str(dev1), "sync", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["synced"] is True
    assert "syncing:" in terminal.getvalue()
