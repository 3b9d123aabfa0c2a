"""Cone patterns for --sparse, checked against what git itself writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.core.sparse import cone_patterns, normalise_sparse_dirs
from launcher.errors import InvalidInputError


@pytest.mark.parametrize(
    "folders",
    [["src"], ["src/app"], ["a/b/c", "a/d"], ["src", "src/app"], ["x/y", "z"]],
)
def test_patterns_are_the_ones_git_sparse_checkout_writes(tmp_path: Path, folders: list[str]) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "sparse-checkout", "set", "--cone", *folders], check=True)
    written = (repo / ".git" / "info" / "sparse-checkout").read_text()
    assert cone_patterns(normalise_sparse_dirs(folders)) == written


@pytest.mark.parametrize("bad", ["", "/", "../up", "a/../b", "./a", "/abs", "a/*", "a\nb", "!a", "a//b"])
def test_anything_but_a_plain_relative_folder_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="--sparse"):
        normalise_sparse_dirs([bad])


@given(st.lists(st.text(min_size=1, max_size=30), max_size=5))
def test_normalising_never_lets_a_pattern_or_a_climb_through(values: list[str]) -> None:
    try:
        folders = normalise_sparse_dirs(values)
    except InvalidInputError:
        return
    for folder in folders:
        assert ".." not in folder.split("/")
        assert not (set("*?[]\\!\n") & set(folder))
        assert cone_patterns([folder]).count("\n") >= 3
