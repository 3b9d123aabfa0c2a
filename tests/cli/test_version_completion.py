"""`launcher --version` and shell completion, through the real entry point in-process."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pytest
from helpers import invoke

import launcher
from launcher import cli


def test_version_is_the_installed_distributions() -> None:
    try:
        expected = version("worktree-launcher")
    except PackageNotFoundError:
        expected = launcher.__version__

    result = invoke(["--version"])

    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"launcher {expected}\n"


def test_version_falls_back_to_the_package_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(_name: str) -> str:
        raise PackageNotFoundError("worktree-launcher")

    monkeypatch.setattr("importlib.metadata.version", not_installed)
    monkeypatch.setattr(launcher, "__version__", "9.9.9-test")

    assert cli.version() == "9.9.9-test"
    assert invoke(["--version"]).stdout == "launcher 9.9.9-test\n"


def test_help_lists_the_completion_options_and_wait() -> None:
    result = invoke(["--help"])

    assert result.exit_code == 0, result.stderr
    for option in ("--install-completion", "--show-completion", "--version"):
        assert option in result.stdout
    assert "wait" in result.stdout


@pytest.mark.parametrize(
    ("shell", "marker"), [("bash", "complete -o default"), ("zsh", "compdef"), ("fish", "complete --command launcher")]
)
def test_show_completion_prints_the_detected_shells_script(
    shell: str, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("typer.completion._get_shell_name", lambda: shell)

    result = invoke(["--show-completion"])

    assert result.exit_code == 0, result.stderr
    assert "_LAUNCHER_COMPLETE" in result.stdout
    assert marker in result.stdout


def test_an_undetectable_shell_is_said_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("typer.completion._get_shell_name", lambda: None)

    result = invoke(["--show-completion"])

    assert result.exit_code == 1
    assert "not supported" in result.stderr


def test_a_named_shell_when_detection_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # typer's switch for machines without a detectable shell: the options then take the shell's name.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")

    assert "compdef" in invoke(["--show-completion", "zsh"]).stdout
    bad = invoke(["--show-completion", "cmd.exe"])
    assert bad.exit_code == 2, (bad.stdout, bad.stderr)


def test_the_shell_asking_for_completions_gets_the_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the installed bash script runs on <TAB> after `launcher w`.
    monkeypatch.setenv("_LAUNCHER_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "launcher w")
    monkeypatch.setenv("COMP_CWORD", "1")

    result = invoke([])

    assert result.exit_code == 0, result.stderr
    assert "wait" in result.stdout.split()
