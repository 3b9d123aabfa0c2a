"""Ordinary tools work in a run: $HOME and /tmp are the run's own and allow exec; nothing else is.

A venv in /tmp, `git config --global`, pip's cache and config in $HOME, all offline. The root
file system stays read-only, and the scratch folders keep nosuid and nodev (the rest of the
profile is tests/security/test_sandbox_profile.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from runkit import Case, agent_image, case, facts, launcher_roots, run_id_of

__all__ = ["agent_image", "case", "launcher_roots"]
pytestmark = pytest.mark.docker

TOOLS = r"""
set -u
fact() { echo "FACT $1=$2"; }
fact home_owner "$(stat -c %u "$HOME")"
fact home_writable "$(touch "$HOME/.probe" 2>/dev/null && echo yes || echo no)"
for dir in /tmp "$HOME"; do
    fact "options $dir" "$(awk -v d="$dir" '$2 == d {print $4}' /proc/mounts)"
done
fact root_fs "$(awk '$2 == "/" {split($4, o, ","); print o[1]}' /proc/mounts)"
fact touch_usr "$(touch /usr/probe 2>/dev/null && echo allowed || echo refused)"

if git config --global user.name "Agent Smith" 2>/tmp/git.err; then
    fact git_global "$(git config --global --get user.name)"
else
    fact git_global "failed: $(tr '\n' ' ' </tmp/git.err)"
fi

if python3 -m venv /tmp/venv >/tmp/venv.err 2>&1; then
    fact venv_python "$(/tmp/venv/bin/python -c 'import sys; print(sys.prefix)' 2>&1)"
    fact venv_pip "$(/tmp/venv/bin/pip --version 2>&1 | cut -d' ' -f1)"
    fact pip_cache "$(/tmp/venv/bin/pip cache dir 2>&1)"
    fact pip_cache_info "$(/tmp/venv/bin/pip cache info >/tmp/pip.out 2>&1 && echo ok || tr '\n' ' ' </tmp/pip.out)"
    /tmp/venv/bin/pip download -q --no-index --find-links /usr/share/python-wheels -d /tmp/wheels setuptools \
        >/tmp/dl.out 2>&1
    fact pip_download "$(ls /tmp/wheels 2>/dev/null | head -1)"
    fact pip_warned "$(grep -c 'cache has been disabled' /tmp/dl.out)"
    /tmp/venv/bin/pip config --user set global.no-color true >/tmp/cfg.out 2>&1
    fact pip_config "$(cat "$HOME/.config/pip/pip.conf" 2>/dev/null | tr '\n' ' ')"
else
    fact venv_python "failed: $(tr '\n' ' ' </tmp/venv.err)"
fi
"""


def test_a_venv_in_tmp_git_config_global_and_a_pip_cache_in_home_work(case: Case, git_repo: Path) -> None:
    task = case.create_task(git_repo, "use ordinary tools")
    result = case.cli("run", task, "--network", "none", "--", "sh", "-c", TOOLS)
    assert result.exit_code == 0, result.stdout + result.stderr
    seen = facts(result.stdout)
    record = case.run_record(run_id_of(result.stderr))

    # $HOME is the run's own uid's; /tmp and $HOME allow exec but never setuid or devices.
    assert int(seen["home_owner"]) == record["uid"], seen
    assert seen["home_writable"] == "yes"
    for folder in ("/tmp", "/home/agent"):
        options = seen[f"options {folder}"].split(",")
        assert {"nosuid", "nodev"} <= set(options), (folder, options)
        assert "noexec" not in options, (folder, options)
    # The rest stays read-only.
    assert seen["root_fs"] == "ro"
    assert seen["touch_usr"] == "refused"

    assert seen["git_global"] == "Agent Smith"
    assert seen["venv_python"] == "/tmp/venv"
    assert seen["venv_pip"] == "pip", "pip is a script in /tmp/venv/bin: /tmp must allow exec"
    assert seen["pip_cache"] == "/home/agent/.cache/pip"
    assert seen["pip_cache_info"] == "ok"
    assert seen["pip_download"].startswith("setuptools-"), seen
    assert seen["pip_warned"] == "0", "pip found its cache in $HOME unusable"
    assert seen["pip_config"].split() == ["[global]", "no-color", "=", "true"], seen
