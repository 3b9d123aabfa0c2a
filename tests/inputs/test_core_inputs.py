"""Hostile and broken input to the core commands: refused clearly, with the documented exit code,
and without losing or changing anything already stored.

Exit codes (README, launcher.errors.ExitCode): 3 conflict, 4 illegal transition, 5 not found,
6 invalid input, 7 state store / root unwritable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke

from launcher.core.slugs import SLUG_RE
from launcher.errors import ExitCode

TESTS = Path(__file__).resolve().parents[1]


Snapshot = tuple[str, dict[str, bytes]]


class Seeded:
    """A case root with two stored tasks (one moved on), and a way to see all of it."""

    def __init__(self, root: Path, repo: Path) -> None:
        self.root, self.repo = root, repo
        for title in ("Existing one", "Existing two"):
            assert self.cli("task", "create", "--repo", str(repo), "--title", title).exit_code == 0
        assert self.cli("task", "set-status", "demo-2", "implementing", "--reason", "seed").exit_code == 0

    def cli(self, *args: str) -> Any:
        return invoke(["--root", str(self.root), *args])

    def snapshot(self) -> Snapshot:
        listed = self.cli("task", "list", "--json")
        assert listed.exit_code == 0, listed.stderr
        active = self.root / "tasks" / "active"
        files = {p.name: p.read_bytes() for p in sorted(active.iterdir())}
        return listed.stdout, files

    def create(self, *args: str) -> Any:
        return self.cli("task", "create", "--repo", str(self.repo), *args)


@pytest.fixture
def seeded(case_root: Path, git_repo: Path) -> Seeded:
    return Seeded(case_root, git_repo)


def assert_refused(result: Any, code: int, message: str) -> None:
    assert result.exit_code == code, f"exit {result.exit_code}: {result.stdout}{result.stderr}"
    assert result.stderr.startswith("launcher: error: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# -- task create: slugs, titles, bodies --------------------------------------------------------

BAD_SLUGS = {
    "dot-dot-slash": "../x",
    "slash": "x/y",
    "space": "a b",
    "nul": "x\x00y",
    "trailing-newline": "fix\n",
    "leading-newline": "\nfix",
    "shell": "$(rm -rf /)",
    "backticks": "`id`",
    "empty": "",
    "upper": "Fix",
    "dash-edge": "-fix-",
    "10kB": "x" * 10_000,
}

BAD_TITLES = {
    "empty": ("", "a task needs a non-empty --title"),
    "blank": ("   \t ", "a task needs a non-empty --title"),
    "newline": ("Fix\nrm -rf /", "may not contain control characters"),
    "nul": ("Fix\x00it", "may not contain control characters"),
    "escape": ("\x1b[2JFix", "may not contain control characters"),
    "10kB": ("x" * 10_000, "the title is 10000 characters; at most 500 are allowed"),
    "c1-csi": ("Fix \x9b31m red", "may not contain control characters"),
    "c1-next-line": ("Fix\x85rm -rf /", "may not contain control characters"),
}


@pytest.mark.parametrize("slug", BAD_SLUGS.values(), ids=BAD_SLUGS.keys())
def test_hostile_slugs_are_refused_and_nothing_changes(seeded: Seeded, slug: str) -> None:
    before = seeded.snapshot()
    assert_refused(seeded.create("--title", "A fine title", "--slug", slug), ExitCode.INVALID_INPUT, "invalid slug")
    assert seeded.snapshot() == before
    # The refused call used no number up.
    assert json.loads(seeded.create("--title", "Next", "--json").stdout)["number"] == 3


@pytest.mark.parametrize(("title", "message"), BAD_TITLES.values(), ids=BAD_TITLES.keys())
def test_bad_titles_are_refused_and_nothing_changes(seeded: Seeded, title: str, message: str) -> None:
    before = seeded.snapshot()
    assert_refused(seeded.create("--title", title), ExitCode.INVALID_INPUT, message)
    assert seeded.snapshot() == before


def test_a_title_with_nothing_to_slug_asks_for_a_slug(seeded: Seeded) -> None:
    before = seeded.snapshot()
    result = seeded.create("--title", "!!! ???")
    assert_refused(result, ExitCode.INVALID_INPUT, "cannot make a slug from '!!! ???'")
    assert "pass --slug" in result.stderr
    assert seeded.snapshot() == before
    made = seeded.create("--title", "!!! ???", "--slug", "punctuation", "--json")
    assert json.loads(made.stdout)["id"] == "demo-3-punctuation"


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("../x", "x"),
        ("../../etc/passwd", "etc-passwd"),
        ("$(touch CANARY)", "touch-canary"),
        ("`touch CANARY`; touch CANARY", "touch-canary-touch-canary"),
        ("x" * 500, "x" * 48),
    ],
    ids=["dot-dot", "etc-passwd", "subshell", "backticks", "500-chars"],
)
def test_hostile_but_printable_titles_are_stored_verbatim_and_never_run(
    seeded: Seeded, tmp_path: Path, title: str, slug: str
) -> None:
    canary = tmp_path / "canary"
    title = title.replace("CANARY", str(canary))
    slug = slug.replace("canary", "-".join(p for p in str(canary).lower().split("/") if p).replace("_", "-"))
    before_list, before_files = seeded.snapshot()
    result = seeded.create("--title", title, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["title"] == title
    assert SLUG_RE.match(data["slug"])
    assert data["slug"] == slug[:48].rstrip("-")
    active = seeded.root / "tasks" / "active"
    assert Path(data["paths"]["json"]).parent == active
    assert Path(data["paths"]["md"]).read_text(encoding="utf-8").startswith(f"# {title}\n")
    assert not canary.exists()
    after_list, after_files = seeded.snapshot()
    assert {k: v for k, v in after_files.items() if k in before_files} == before_files
    assert [t["id"] for t in json.loads(after_list)][:2] == [t["id"] for t in json.loads(before_list)]


@pytest.mark.parametrize(
    ("make_body", "message"),
    [
        (lambda d: d / "missing.md", "cannot read --body-file"),
        (lambda d: _write(d / "nul.md", b"text\x00more"), "contains a NUL"),
        (lambda d: _write(d / "latin1.md", "caf\xe9".encode("latin-1")), "cannot read --body-file"),
        (lambda d: d, "cannot read --body-file"),
    ],
    ids=["missing", "nul", "not-utf8", "a-folder"],
)
def test_bad_body_files_are_refused(
    seeded: Seeded, tmp_path: Path, make_body: Callable[[Path], Path], message: str
) -> None:
    before = seeded.snapshot()
    body = make_body(tmp_path)
    assert_refused(seeded.create("--title", "With body", "--body-file", str(body)), ExitCode.INVALID_INPUT, message)
    assert seeded.snapshot() == before


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- task create: repositories -----------------------------------------------------------------


def test_repo_path_that_does_not_exist(seeded: Seeded, tmp_path: Path) -> None:
    before = seeded.snapshot()
    missing = tmp_path / "no" / "such" / "repo"
    result = seeded.cli("task", "create", "--repo", str(missing), "--title", "Lost")
    assert_refused(result, ExitCode.INVALID_INPUT, f"repository path {missing} does not exist")
    assert seeded.snapshot() == before


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_repo_that_is_not_a_git_repository(seeded: Seeded, tmp_path: Path, kind: str) -> None:
    before = seeded.snapshot()
    plain = tmp_path / "plain"
    if kind == "folder":
        plain.mkdir()
    else:
        plain.write_text("not a repo")
    result = seeded.cli("task", "create", "--repo", str(plain), "--title", "Nowhere")
    assert_refused(result, ExitCode.INVALID_INPUT, "is not inside a git repository")
    assert "pass --repo PATH of a git checkout" in result.stderr
    assert seeded.snapshot() == before


# -- statuses and task references --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["set-status", "demo-1", "finished"], ExitCode.INVALID_INPUT, "unknown task status 'finished'"),
        (["set-status", "demo-1", "MERGED"], ExitCode.INVALID_INPUT, "unknown task status 'MERGED'"),
        (["set-status", "demo-1", "merged\n"], ExitCode.INVALID_INPUT, "unknown task status"),
        (["set-status", "demo-1", "../merged"], ExitCode.INVALID_INPUT, "unknown task status"),
        (["set-status", "demo-1", "implementing", "--from", "x"], ExitCode.INVALID_INPUT, "unknown task status 'x'"),
        (["list", "--status", "done"], ExitCode.INVALID_INPUT, "unknown task status 'done'"),
        (["set-status", "demo-1", "merged"], ExitCode.ILLEGAL_TRANSITION, "from active the legal targets are"),
        (["set-status", "demo-2", "verifying", "--from", "active"], ExitCode.CONFLICT, "is implementing, not active"),
        (["set-status", "../demo-1", "implementing"], ExitCode.NOT_FOUND, "no task '../demo-1'"),
        (["show", "demo-1\n"], ExitCode.NOT_FOUND, "no task"),
        (["show", ""], ExitCode.NOT_FOUND, "no task ''"),
        (["show", "demo-0"], ExitCode.NOT_FOUND, "no task 'demo-0'"),
    ],
    ids=[
        "unknown",
        "upper",
        "newline",
        "dot-dot",
        "unknown-from",
        "list-unknown",
        "illegal",
        "conflict",
        "ref-dot-dot",
        "ref-newline",
        "ref-empty",
        "ref-zero",
    ],
)
def test_bad_statuses_and_refs(seeded: Seeded, args: list[str], code: int, message: str) -> None:
    before = seeded.snapshot()
    assert_refused(seeded.cli("task", *args), code, message)
    assert seeded.snapshot() == before


# -- roots and state stores that cannot work ---------------------------------------------------


@pytest.mark.parametrize(
    "command", [["init"], ["task", "list"], ["task", "create", "--repo", "REPO", "--title", "x"]], ids=" ".join
)
def test_a_root_whose_state_folder_is_a_file_is_exit_7(case_root: Path, git_repo: Path, command: list[str]) -> None:
    """Tests run as root, so chmod cannot make a root unwritable; a regular file where the
    `.launcher` folder belongs fails for every user."""
    blocker = case_root / ".launcher"
    blocker.write_bytes(b"not a folder\n")
    args = [str(git_repo) if a == "REPO" else a for a in command]
    result = invoke(["--root", str(case_root), *args])
    assert_refused(result, ExitCode.STATE_STORE, f"cannot open the state store at {blocker}/state.db")
    assert blocker.read_bytes() == b"not a folder\n"
    assert not (case_root / "tasks" / "active").exists() or not any((case_root / "tasks" / "active").iterdir())


@pytest.mark.parametrize(
    "command",
    [["task", "create", "--repo", "REPO", "--title", "Blocked"], ["task", "set-status", "demo-1", "implementing"]],
    ids=["create", "set-status"],
)
def test_a_root_whose_locks_folder_is_a_file_is_exit_7(seeded: Seeded, command: list[str]) -> None:
    """Task files are written under a per-task lock in .launcher/locks; when that cannot be
    created the command must fail as a state-store error, not with a traceback."""
    before_list, before_files = seeded.snapshot()
    locks = seeded.root / ".launcher" / "locks"
    for path in sorted(locks.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    locks.rmdir()
    locks.write_bytes(b"")
    args = [str(seeded.repo) if a == "REPO" else a for a in command]
    result = seeded.cli(*args)
    assert_refused(result, ExitCode.STATE_STORE, str(locks))
    # Nothing stored before is lost or changed.
    after_list, after_files = seeded.snapshot()
    assert {k: after_files.get(k) for k in before_files} == before_files
    before_ids = [t["id"] for t in json.loads(before_list)]
    assert [t["id"] for t in json.loads(after_list)][:2] == before_ids


def test_a_root_that_is_not_a_folder_is_invalid_input(tmp_path: Path) -> None:
    a_file = tmp_path / "root-file"
    a_file.write_text("x")
    for root in (a_file, tmp_path / "missing-root"):
        assert_refused(
            invoke(["--root", str(root), "task", "list"]),
            ExitCode.INVALID_INPUT,
            f"case root {root} is not a directory",
        )


@pytest.mark.parametrize("url", ["mysql://db/launcher", "sqlite://relative.db", "file:///tmp/x.db"])
def test_an_unsupported_state_url_is_invalid_input(case_root: Path, url: str) -> None:
    result = invoke(["--root", str(case_root), "--state-url", url, "task", "list"])
    assert_refused(result, ExitCode.INVALID_INPUT, f"unsupported state URL {url!r}")
    assert not (case_root / ".launcher" / "state.db").exists()
