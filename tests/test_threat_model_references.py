"""docs/threat-model.md names, for every line, the test that proves it: those tests must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"`(?P<file>[a-z_/]+\.py)::(?P<test>test_[a-z0-9_]+)`")


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text()
    references = REFERENCE.findall(text)
    assert len(references) >= 20
    missing = []
    for file, test in references:
        path = ROOT / "tests" / file
        if not path.is_file() or not re.search(rf"^def {test}\(", path.read_text(), re.MULTILINE):
            missing.append(f"{file}::{test}")
    assert missing == []
