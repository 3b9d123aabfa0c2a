"""The run's checkout (entry.sh): nothing of it is written again into the run's own objects.

A run borrows the repository's objects read-only. A file git cannot tell clean by its stat
(written in the same second as the index: "racily clean") is hashed again by `git add -A` and,
since git cannot freshen a read-only object, written again as a loose copy in the run's object
directory. entry.sh backdates those files and refreshes the index; these runs check that no
such copy is made, whatever the file names, with and without --sparse.

Real Docker engine, real git, the real CLI in a separate process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runkit import Case, facts, make_repo

pytestmark = pytest.mark.docker

# Enough files for the checkout to write many of them in the index's own second; names a
# command line would read as options or expressions.
FILES = {
    **{f"pkg{n // 50}/mod{n}.py": f"VALUE = {n}\n" * (1 + n % 7) for n in range(600)},
    "-delete": "not an option\n",
    "!": "not an operator\n",
    "(x": "not a group\n",
    "docs/a file with spaces.md": "spaces\n",
    "README.md": "# many files\n",
}

AGENT = (
    'echo "FACT status=$(git status --porcelain | wc -l)"; git add -A;'
    ' echo "FACT loose=$(git count-objects -v | sed -n "s/^count: //p")";'
    ' echo "FACT odd=$(cat ./-delete ./! ./"(x" | tr "\\n" ";")"; echo "FACT tracked=$(git ls-files | wc -l)";'
    ' echo "FACT outside=$(test -e pkg0/mod0.py && echo present || echo absent)"'
)


@pytest.mark.parametrize("sparse", [[], ["--sparse", "pkg3"]], ids=["full", "sparse"])
def test_git_add_all_after_the_checkout_writes_no_copy_of_an_unchanged_file(
    case: Case, tmp_path: Path, sparse: list[str]
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    result = case.cli(
        "run", "--repo", str(repo), "--title", "checkout", "--network", "none", *sparse, "--", "sh", "-c", AGENT
    )
    assert result.exit_code == 0, result.stderr
    seen = facts(result.stdout)
    assert seen["status"] == "0", "a fresh checkout is clean"
    assert seen["loose"] == "0", "git add -A wrote copies of unchanged files into the run's objects"
    assert seen["tracked"] == str(len(FILES))
    # Top-level files are in every sparse cone.
    assert seen["odd"] == "not an option;not an operator;not a group;"
    assert seen["outside"] == ("absent" if sparse else "present"), "files outside the sparse cone stay absent"
