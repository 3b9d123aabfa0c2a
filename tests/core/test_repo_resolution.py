"""Which repository a task means on this machine (launcher/core/repos.py), and its record.

Real repositories throughout; only the clone cache's clone is stood in by a recorder (its
own tests are tests/adapters/test_clone_cache.py), so each decision shows which way it went.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeWorld
from helpers import git, invoke, make_repo
from pg import PgServer, pg_server

from launcher.adapters.clone_cache import CloneCache
from launcher.adapters.git import Repository
from launcher.adapters.projects import Projects
from launcher.adapters.store import open_coordinator, sqlite_url
from launcher.adapters.store.sql.schema import SCHEMA_VERSION
from launcher.core.repos import Repositories, is_remote_url, normalise_url, redact_url
from launcher.core.run import RunRequest
from launcher.core.transitions import TaskStatus
from launcher.errors import ExitCode, InvalidInputError, NotFoundError
from launcher.models import AdoptedTask, NewTask, TaskRecord

__all__ = ["pg_server"]


# -- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spellings",
    [
        [
            "https://github.com/team/api.git",
            "https://GitHub.com/team/api",
            "https://x-access-token:ghp_secret@github.com:443/team/api/",
            "HTTPS://github.com//team/api.git/",
        ],
        ["git@github.com:team/api.git", "ssh://git@github.com/team/api", "ssh://github.com:22/team/api.git"],
        ["/srv/git/api.git", "/srv/git/api.git/", "file:///srv/git/api.git", "file:///srv//git/./api.git"],
    ],
)
def test_every_spelling_of_one_url_has_one_key(spellings: list[str]) -> None:
    assert len({normalise_url(url) for url in spellings}) == 1, [normalise_url(u) for u in spellings]


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("https://github.com/team/api", "https://github.com/team/web"),
        ("https://github.com/team/api", "http://github.com/team/api"),
        ("https://git.example.com:8443/api", "https://git.example.com/api"),
        # Locally `.git` names another folder: no suffix is dropped.
        ("/srv/git/api.git", "/srv/git/api"),
    ],
)
def test_different_repositories_keep_different_keys(one: str, other: str) -> None:
    assert normalise_url(one) != normalise_url(other)


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://user:ghp_secret@github.com/team/api.git", "https://github.com/team/api.git"),
        ("https://ghp_secret@github.com/team/api.git", "https://github.com/team/api.git"),
        ("https://github.com/team/api.git?access_token=ghp_secret#x", "https://github.com/team/api.git"),
        ("ssh://git:hunter2@git.example.com:2222/api", "ssh://git@git.example.com:2222/api"),
        ("git@github.com:team/api.git", "git@github.com:team/api.git"),
        ("deploy:hunter2@git.example.com:team/api", "git.example.com:team/api"),
        ("http://[::1]:8080/api.git", "http://[::1]:8080/api.git"),
        ("/srv/git/api.git", "/srv/git/api.git"),
        ("file:///srv/git/api.git", "file:///srv/git/api.git"),
    ],
)
def test_stored_urls_carry_no_credentials(url: str, stored: str) -> None:
    assert redact_url(url) == stored
    assert "secret" not in redact_url(url)
    assert "hunter2" not in redact_url(url)


@pytest.mark.parametrize(
    ("value", "remote"),
    [
        ("https://github.com/a/b", True),
        ("file:///srv/a.git", True),
        ("git@github.com:a/b.git", True),
        ("/srv/a.git", False),
        ("../api", False),
        ("./odd:name", False),
        ("api", False),
    ],
)
def test_what_counts_as_a_remote_url(value: str, remote: bool) -> None:
    assert is_remote_url(value) is remote


# -- resolution ----------------------------------------------------------------------------


class RecordingClones:
    """The real remote reader; clones stood in by a prepared checkout, every sync recorded."""

    def __init__(self, locks: Path, checkout: Path) -> None:
        self.real = CloneCache(locks.parent / "clones", locks)
        self.checkout = checkout
        self.synced: list[tuple[str, str]] = []

    def remote_url(self, toplevel: Path) -> str | None:
        return self.real.remote_url(toplevel)

    def holds(self, path: Path) -> bool:
        return self.real.holds(path)

    def sync(self, url: str, key: str) -> Path:
        self.synced.append((url, key))
        return self.checkout


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A bare remote, the creator's checkout of it, a stand-in clone, and a case root."""
    source = make_repo(tmp_path / "source")
    remote = tmp_path / "remote.git"
    git("clone", "-q", "--bare", str(source), str(remote), cwd=tmp_path)
    creator = tmp_path / "creator" / "api"
    creator.parent.mkdir()
    git("clone", "-q", str(remote), str(creator), cwd=tmp_path)
    stand_in = make_repo(tmp_path / "stand-in-clone")
    root = tmp_path / "case"
    root.mkdir()
    return {"remote": remote, "creator": creator, "stand_in": stand_in, "root": root, "tmp": tmp_path}


def _repositories(world: dict[str, Path], configured: dict[str, str] | None = None) -> tuple[Repositories, Any]:
    locks = world["root"] / ".launcher" / "locks"
    clones = RecordingClones(locks, world["stand_in"])

    def open_repo(path: str) -> Repository:
        return Repository.open(path, lock_dir=locks)

    repos = Repositories(
        Projects.load(world["root"]), open_repo, configured=configured, root=world["root"], clones=clones
    )
    return repos, clones


def _task(**fields: Any) -> TaskRecord:
    now = datetime.now(UTC)
    base: dict[str, Any] = {
        "id": "api-1-fix",
        "prefix": "api",
        "number": 1,
        "slug": "fix",
        "title": "Fix",
        "repo": "api",
        "repo_path": None,
        "repo_url": None,
        "base_ref": "HEAD",
        "image": None,
        "command": [],
        "status": TaskStatus.ACTIVE,
        "queued": False,
        "version": 1,
        "doc": {},
        "created_at": now,
        "updated_at": now,
    }
    return TaskRecord(**{**base, **fields})


def test_a_created_task_names_its_remote_without_credentials(world: dict[str, Path]) -> None:
    creator = world["creator"]
    git("remote", "set-url", "origin", "https://bot:ghp_secret@git.example.com/team/api.git", cwd=creator)
    repos, _ = _repositories(world)
    ref = repos.resolve(str(creator))
    assert (ref.name, ref.path, ref.url) == ("api", str(creator), "https://git.example.com/team/api.git")


def test_without_origin_the_first_remote_names_it(world: dict[str, Path]) -> None:
    creator = world["creator"]
    git("remote", "rename", "origin", "upstream", cwd=creator)
    git("remote", "add", "zz-fork", "https://example.com/fork.git", cwd=creator)
    repos, _ = _repositories(world)
    assert repos.resolve(str(creator)).url == str(world["remote"])
    git("remote", "remove", "upstream", cwd=creator)
    git("remote", "remove", "zz-fork", cwd=creator)
    assert repos.resolve(str(creator)).url is None


def test_run_repo_wins_over_everything(world: dict[str, Path]) -> None:
    elsewhere = make_repo(world["tmp"] / "elsewhere")
    (world["root"] / "projects.json").write_text(json.dumps({"repos": [{"name": "api", "path": "../creator/api"}]}))
    repos, clones = _repositories(world, {"api": str(world["remote"])})
    task = _task(repo_path=str(world["creator"]), repo_url=str(world["remote"]))
    assert repos.locate(task, str(elsewhere)) == str(elsewhere)
    assert repos.locate(task) == str(world["creator"])  # projects.json, next
    assert clones.synced == []


def test_run_repo_takes_names_and_urls_too(world: dict[str, Path]) -> None:
    (world["root"] / "projects.json").write_text(json.dumps({"repos": [{"name": "web", "path": "../creator/api"}]}))
    repos, clones = _repositories(world, {"mirror": "file://" + str(world["remote"])})
    task = _task()
    assert repos.locate(task, "web") == str(world["creator"])
    assert repos.locate(task, "mirror") == str(world["stand_in"])
    assert repos.locate(task, "https://git.example.com/team/api.git") == str(world["stand_in"])
    assert [key for _, key in clones.synced] == [
        "file://" + str(world["remote"]),
        "https://git.example.com/team/api",
    ]
    with pytest.raises(NotFoundError, match="no repository named 'nope'"):
        repos.locate(task, "nope")


def test_projects_json_wins_over_repos_and_the_creators_path(world: dict[str, Path]) -> None:
    other = make_repo(world["tmp"] / "harness-copy")
    (world["root"] / "projects.json").write_text(json.dumps({"repos": [{"name": "api", "path": str(other)}]}))
    repos, clones = _repositories(world, {"api": str(world["creator"])})
    assert repos.locate(_task(repo_path=str(world["creator"]))) == str(other)
    assert clones.synced == []


def test_repos_in_launcher_toml_map_a_name_to_a_path_or_a_url(world: dict[str, Path]) -> None:
    task = _task(repo_path="/no/such/creator/api", repo_url="https://git.example.com/team/api.git")
    repos, clones = _repositories(world, {"api": "../creator/api"})  # relative to the case root
    assert repos.locate(task) == str(world["creator"])
    repos, clones = _repositories(world, {"api": "https://bot:ghp_secret@git.example.com/team/api"})
    assert repos.locate(task) == str(world["stand_in"])
    # Cloned from the spelling without credentials: the host's credential helper supplies them.
    assert clones.synced == [("https://git.example.com/team/api", "https://git.example.com/team/api")]


def test_the_creators_path_is_used_when_it_is_the_same_repository(world: dict[str, Path]) -> None:
    creator = world["creator"]
    repos, clones = _repositories(world)
    # Another spelling of the same remote still proves it.
    task = _task(repo_path=str(creator), repo_url="file://" + str(world["remote"]) + "/")
    assert repos.locate(task) == str(creator)
    assert clones.synced == []


def test_a_different_repository_at_the_creators_path_is_not_used(world: dict[str, Path]) -> None:
    creator = world["creator"]
    git("remote", "set-url", "origin", "https://git.example.com/someone/else.git", cwd=creator)
    repos, clones = _repositories(world)
    task = _task(repo_path=str(creator), repo_url=str(world["remote"]))
    assert repos.locate(task) == str(world["stand_in"])
    assert clones.synced == [(str(world["remote"]), "file://" + str(world["remote"]))]


def test_a_creators_path_in_the_clone_cache_is_fetched_as_a_clone_not_used_as_it_is(world: dict[str, Path]) -> None:
    # Build boxes set up alike: the creator's repository was its clone cache, at the same path
    # here. Used as a checkout it would never be fetched; as a clone it is, before every run.
    repos, clones = _repositories(world)
    cached = world["root"] / ".launcher" / "clones" / "api-0123abcd"
    git("clone", "-q", str(world["remote"]), str(cached), cwd=world["tmp"])
    task = _task(repo_path=str(cached), repo_url=str(world["remote"]))
    assert repos.locate(task) == str(world["stand_in"])
    assert clones.synced == [(str(world["remote"]), "file://" + str(world["remote"]))]


def test_a_task_with_a_url_is_cloned_where_nothing_else_names_it(world: dict[str, Path]) -> None:
    repos, clones = _repositories(world)
    task = _task(repo_path="/home/someone/src/api", repo_url="git@github.com:team/api.git")
    assert repos.locate(task) == str(world["stand_in"])
    assert clones.synced == [("git@github.com:team/api.git", "ssh://github.com/team/api")]


def test_a_task_without_a_url_uses_its_creators_path_only_where_its_base_resolves(world: dict[str, Path]) -> None:
    creator = world["creator"]
    repos, _ = _repositories(world)
    assert repos.locate(_task(repo_path=str(creator), base_ref="main")) == str(creator)
    with pytest.raises(NotFoundError, match="is not on this machine"):
        repos.locate(_task(repo_path=str(creator), base_ref="no-such-branch"))


def test_an_unresolvable_repository_says_every_way_to_name_it(world: dict[str, Path]) -> None:
    repos, clones = _repositories(world)
    with pytest.raises(NotFoundError) as caught:
        repos.locate(_task(repo_path="/home/someone/src/api"))
    error = caught.value
    assert error.exit_code == ExitCode.NOT_FOUND
    assert error.message == "task api-1-fix: its repository 'api' is not on this machine"
    hint = error.hint or ""
    for way in ("launcher run api-1-fix --repo PATH|NAME", "projects.json", '[repos] api = "PATH or URL"'):
        assert way in hint
    assert "records no remote URL" in hint
    assert "/home/someone/src/api is not here" in hint
    assert clones.synced == []


def test_a_repos_path_that_is_no_repository_is_refused(world: dict[str, Path]) -> None:
    repos, _ = _repositories(world, {"api": str(world["tmp"] / "missing")})
    with pytest.raises(InvalidInputError, match="does not exist"):
        repos.locate(_task())


# -- the record: both backends, and stores made before v6 -------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "state.db")
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with server.database() as url:
        yield url


def test_the_store_keeps_a_tasks_url(store_url: str) -> None:
    url = "https://git.example.com/team/api.git"
    with open_coordinator(store_url) as store:
        new = NewTask(prefix="api", slug="fix", title="Fix", repo="api", repo_path="/src/api", repo_url=url, doc={})
        made = store.create_task(new)
        assert made.repo_url == url
        assert store.get_task(made.id).repo_url == url
        assert store.resolve_task("api-1").repo_url == url
        assert [t.repo_url for t in store.list_tasks()] == [url]
        adopted = store.adopt_task(
            AdoptedTask(
                id="api-7-old",
                prefix="api",
                number=7,
                slug="old",
                title="Old",
                repo="api",
                repo_path=None,
                repo_url=url,
                doc={"status": "active"},
                file_path="/case/tasks/active/api-7-old.task.json",
                file_sha256="0" * 64,
            )
        )
        assert adopted.repo_url == url
        bare = store.create_task(new.model_copy(update={"slug": "two", "repo_url": None}))
        assert store.get_task(bare.id).repo_url is None


def test_a_version_5_store_gains_the_column_and_keeps_its_tasks(tmp_path: Path) -> None:
    import sqlite3

    from launcher.adapters.store import sqlite as sqlite_store

    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    try:
        for statements in sqlite_store.MIGRATIONS[:5]:
            for statement in statements:
                db.execute(statement)
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (5)")
        db.execute(
            "INSERT INTO tasks (id, prefix, number, slug, title, repo, repo_path, base_ref, command, status, "
            "queued, version, doc, created_at, updated_at) VALUES ('api-1-old', 'api', 1, 'old', 'Old', 'api', "
            "'/src/api', 'HEAD', '[]', 'active', 0, 1, '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        db.commit()
    finally:
        db.close()
    with open_coordinator(sqlite_url(path)) as store:
        old = store.get_task("api-1-old")
        assert (old.repo_path, old.repo_url) == ("/src/api", None)
    check = sqlite3.connect(path)
    try:
        assert check.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert SCHEMA_VERSION == 7
    finally:
        check.close()


# -- the CLI and the plan ----------------------------------------------------------------------


def test_task_create_records_the_url_and_task_show_prints_it(world: dict[str, Path]) -> None:
    root, creator = world["root"], world["creator"]
    git("remote", "set-url", "origin", "https://bot:ghp_secret@git.example.com/team/api.git", cwd=creator)
    made = invoke(["--root", str(root), "task", "create", "--repo", str(creator), "--title", "Portable", "--json"])
    assert made.exit_code == 0, made.stderr
    task = json.loads(made.stdout)
    assert (task["repo"], task["repo_path"]) == ("api", str(creator))
    assert task["repo_url"] == "https://git.example.com/team/api.git"
    shown = invoke(["--root", str(root), "task", "show", task["id"]])
    assert "url:     https://git.example.com/team/api.git" in shown.stdout
    stored = (root / ".launcher" / "state.db").read_bytes()
    assert b"ghp_secret" not in stored


def test_run_repo_alone_needs_a_task_and_title_needs_repo(world: dict[str, Path]) -> None:
    root = world["root"]
    alone = invoke(["--root", str(root), "run", "--repo", str(world["creator"])])
    assert alone.exit_code == ExitCode.INVALID_INPUT
    assert "name a task to run" in alone.stderr
    assert "with --repo alone" in alone.stderr
    titled = invoke(["--root", str(root), "run", "--title", "No repo"])
    assert titled.exit_code == ExitCode.USAGE  # options that do not go together: a usage error
    assert "--title goes with --repo" in titled.stderr


def test_run_task_repo_is_resolved_before_anything_runs(world: dict[str, Path]) -> None:
    root = world["root"]
    made = invoke(["--root", str(root), "task", "create", "--repo", str(world["creator"]), "--title", "T", "--json"])
    task_id = json.loads(made.stdout)["id"]
    missing = invoke(["--root", str(root), "run", task_id, "--repo", str(world["tmp"] / "gone"), "--", "true"])
    assert missing.exit_code == ExitCode.INVALID_INPUT
    assert "does not exist" in missing.stderr
    unknown = invoke(["--root", str(root), "run", "api-99", "--repo", str(world["creator"])])
    assert unknown.exit_code == ExitCode.NOT_FOUND
    assert json.loads(invoke(["--root", str(root), "ps", "--all", "--json"]).stdout) == []


def test_the_plan_takes_the_requests_repository_over_the_located_one(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path)
    try:
        opened: list[str] = []
        located: list[str] = []
        repo = world.repo

        def open_repo(path: str) -> Any:
            opened.append(path)
            return repo

        def locate(task: TaskRecord) -> str:
            located.append(task.id)
            return "/located/here"

        world.deps.open_repo = open_repo
        world.deps.locate_repo = locate
        task_id = world.new_task()
        world.service.plan(RunRequest(task=task_id, network="none", repo="/given/here"), host_environ={})
        assert (opened, located) == (["/given/here"], [])
        world.service.plan(RunRequest(task=task_id, network="none"), host_environ={})
        assert (opened[-1], located) == ("/located/here", [task_id])
    finally:
        world.close()


def test_a_url_that_is_no_url_is_refused_without_echoing_its_credentials() -> None:
    with pytest.raises(InvalidInputError, match="not a valid repository URL") as caught:
        normalise_url("https://bot:ghp_secret@git.example.com:notaport/api.git")
    assert "ghp_secret" not in str(caught.value)
    with pytest.raises(InvalidInputError):
        redact_url("https://bot:ghp_secret@git.example.com:99999999/api.git")
