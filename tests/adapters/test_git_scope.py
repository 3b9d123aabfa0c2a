"""Host git takes a run's commits without its `.case/` scope: every commit checked, ids kept where possible."""

from __future__ import annotations

from pathlib import Path

from helpers import git, make_repo

from launcher.adapters.git import Repository


def commit(repo: Path, message: str, files: dict[str, str], *, force: bool = False) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git("add", *(["-f"] if force else []), *files, cwd=repo)
    git("commit", "-q", "-m", message, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo).strip()


def paths_of(repo: Path, rev: str) -> list[str]:
    return git("ls-tree", "-r", "--name-only", rev, cwd=repo).split()


def test_every_commit_loses_the_runs_scope_and_keeps_the_rest(tmp_path: Path) -> None:
    top = make_repo(tmp_path / "repo")
    base = git("rev-parse", "HEAD", cwd=top).strip()
    clean = commit(top, "clean", {"a.txt": "a\n"})
    commit(top, "scope in", {".case/x": "x\n", "b.txt": "b\n"}, force=True)
    commit(top, "later", {"c.txt": "c\n"})
    tip = git("rev-parse", "HEAD", cwd=top).strip()
    repo = Repository(top, top / ".git", tmp_path / "locks")

    new_tip, rewritten = repo.rewrite_without(base, tip, ".case")

    assert clean not in rewritten, "a commit without .case/ keeps its id"
    assert len(rewritten) == 2
    assert new_tip == rewritten[tip]
    for rev in git("rev-list", f"{base}..{new_tip}", cwd=top).split():
        assert not [p for p in paths_of(top, rev) if p.startswith(".case")]
    assert paths_of(top, new_tip) == sorted(["README.md", "a.txt", "b.txt", "c.txt", "src/app.py"])
    messages = git("log", "--format=%s|%an|%ae", f"{base}..{new_tip}", cwd=top).splitlines()
    assert messages == [f"{m}|Test Author|author@example.invalid" for m in ("later", "scope in", "clean")]
    # Deterministic: a settle repeated after a crash lands on the same commits.
    assert repo.rewrite_without(base, tip, ".case") == (new_tip, rewritten)


def test_a_scope_the_base_tracks_is_put_back_as_the_base_has_it(tmp_path: Path) -> None:
    top = make_repo(tmp_path / "repo", {"README.md": "x\n", ".case/README": "the project's\n"})
    base = git("rev-parse", "HEAD", cwd=top).strip()
    commit(top, "changed it", {".case/README": "the run's\n", "y": "y\n"}, force=True)
    tip = git("rev-parse", "HEAD", cwd=top).strip()
    repo = Repository(top, top / ".git", tmp_path / "locks")

    new_tip, _ = repo.rewrite_without(base, tip, ".case")

    assert git("show", f"{new_tip}:.case/README", cwd=top) == "the project's\n"
    assert git("diff", "--name-only", base, new_tip, cwd=top).split() == ["y"]


def test_a_signature_that_no_longer_holds_is_dropped(tmp_path: Path) -> None:
    top = make_repo(tmp_path / "repo")
    base = git("rev-parse", "HEAD", cwd=top).strip()
    scoped = commit(top, "scope", {".case/x": "x\n"}, force=True)
    raw = git("cat-file", "commit", scoped, cwd=top)
    header, _, message = raw.partition("\n\n")
    signed = f"{header}\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEz\n -----END PGP SIGNATURE-----\n\n{message}"
    (tmp_path / "signed").write_text(signed)
    forged = git("hash-object", "-t", "commit", "-w", str(tmp_path / "signed"), cwd=top).strip()
    repo = Repository(top, top / ".git", tmp_path / "locks")

    new_tip, _ = repo.rewrite_without(base, forged, ".case")

    rewritten = git("cat-file", "commit", new_tip, cwd=top)
    assert "gpgsig" not in rewritten
    assert "PGP" not in rewritten
    assert rewritten.endswith("\n\nscope\n")
