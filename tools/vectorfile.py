"""Shared by the golden-vector generators: write the vector file, or check it.

    python tools/gen_vectors.py            # rewrite specs/vectors/records.json
    python tools/gen_vectors.py --check    # exit 1 if the file differs from the generator
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(path: Path, text: str, argv: list[str]) -> int:
    """The generators' command line: `--check` compares, no argument writes."""
    if argv[1:] == ["--check"]:
        same = path.exists() and path.read_text(encoding="utf-8") == text
        print(f"{path}: {'up to date' if same else 'DIFFERS from the generator'}")
        return 0 if same else 1
    if argv[1:]:
        print(f"usage: python tools/{Path(argv[0]).name} [--check]", file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0
