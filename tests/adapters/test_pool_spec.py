"""The spec a warm slot's entry sources: every value arrives byte for byte, nothing is run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.adapters.poolslots import CONTROL_DIR, PoolSlots
from launcher.errors import InvalidInputError

NASTY = ["plain", "", "it's", '"double"', "$(touch /tmp/pwned)", "`id`", "a\nb", "back\\slash", "*", "~", "  lead"]


def _spec(tmp_path: Path, env: dict[str, str], take: dict[str, str], argv: list[str]) -> Path:
    folder = tmp_path / "slot"
    (folder / CONTROL_DIR).mkdir(parents=True, exist_ok=True)
    PoolSlots(tmp_path / "pool", tmp_path / "wt").write_spec(folder, env, take, argv, (os.getuid(), os.getgid()))
    return folder / CONTROL_DIR / "spec.sh"


def _source(spec: Path, script: str) -> str:
    # Bytes, decoded here: text mode would turn a \r the shell printed into \n.
    proc = subprocess.run(["sh", "-c", f". {spec}\n{script}"], capture_output=True, check=True, env={})
    return proc.stdout.decode("utf-8")


def test_values_and_arguments_arrive_as_given_and_only_env_is_exported(tmp_path: Path) -> None:
    env = {f"V{i}": value for i, value in enumerate(NASTY)}
    spec = _spec(tmp_path, env, {"TAKE": "$(id)"}, NASTY)
    printed = _source(spec, "for name in " + " ".join(env) + '; do eval "printf \'%s\\0\' \\"\\$$name\\""; done')
    assert printed.split("\0")[:-1] == NASTY
    assert _source(spec, 'for a in "$@"; do printf "%s\\0" "$a"; done').split("\0")[:-1] == NASTY
    assert _source(spec, 'printf %s "$TAKE"') == "$(id)"
    assert "TAKE=" not in _source(spec, "env"), "take values are for the entry, not the agent's environment"
    assert not Path("/tmp/pwned").exists()
    assert oct(spec.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(("env", "message"), [({"1BAD": "x"}, "variable name"), ({"OK": "a\0b"}, "NUL")])
def test_names_a_shell_would_misread_and_nul_bytes_are_refused(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _spec(tmp_path, env, {}, [])


@pytest.mark.slow
@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40))
def test_any_text_survives_the_quoting(tmp_path_factory: pytest.TempPathFactory, value: str) -> None:
    spec = _spec(tmp_path_factory.mktemp("spec"), {"V": value}, {}, [value])
    assert _source(spec, 'printf %s "$V"') == value
    assert _source(spec, 'printf %s "$1"') == value
