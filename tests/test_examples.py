"""examples/ and the README's Python API snippet run as written, each as its own
process (as a user runs them), in a temporary folder, on loopback only, bounded in
time. The outputs asserted are the money: what was paid, refused and held."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(args: list[str], cwd: Path) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_every_example_is_run_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "broken_merge.py", "pay_and_sync.py", "point_of_sale.py"]  # the first: test_sim_paths


def test_pay_and_sync(tmp_path: Path) -> None:
    out = run([str(EXAMPLES / "pay_and_sync.py"), str(tmp_path)], tmp_path)
    assert out.splitlines() == [
        "alice paid 12.50 AED to bob: applied",
        "alice synced: sent 1, the hub stored 1",
        "bob holds 12.50 AED, alice 237.50 AED",
    ]
    assert {p.name for p in tmp_path.iterdir()} == {"authority", "hub", "alice", "bob"}


def test_point_of_sale_takes_payments_offline_and_syncs_when_the_hub_appears(
        tmp_path: Path) -> None:
    out = run([str(EXAMPLES / "point_of_sale.py"), str(tmp_path)], tmp_path).splitlines()
    receipts = [re.sub(r"from \w+:", "from ID:", line) for line in out
                if line.startswith("receipt")]
    assert receipts == ["receipt R-1001: 45.00 AED from ID: applied",
                        "receipt R-1002: 120.00 AED from ID: applied",
                        "receipt R-1004: 30.50 AED from ID: applied"]
    declined = [line for line in out if line.startswith("declined")]
    assert len(declined) == 1
    assert declined[0].startswith("declined R-1003 on driver-1's phone: insufficient funds")
    assert out[-2:] == ["3 sales taken offline; POS balance 195.50 AED",
                        "the hub holds all 3 sales: POS balance there 195.50 AED"]


def readme_api_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the README's Python API section has one runnable snippet"
    return str(blocks[0])


def test_the_readme_api_snippet_runs(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(readme_api_snippet(), encoding="utf-8")
    out = run(["snippet.py"], tmp_path)
    assert out.splitlines() == ["1250 applied", "bob holds 12.50 AED"]
