"""launcher.core.pathscan on real trees: finding, fixing and rendering hard-coded paths."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.adapters.safe_io import atomic_write
from launcher.core.pathscan import (
    MAX_BYTES,
    OUTSIDE,
    apply_fix,
    check,
    plan_fix,
    render,
    render_text,
    shell_contexts,
    shell_root_expression,
)
from launcher.errors import InvalidInputError, NotFoundError

OLD = "/Users/alice/dev/case"


def write(base: Path, rel: str, text: str | bytes, mode: int = 0o644) -> Path:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def snapshot(base: Path) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CASE_ROOT", "CDPATH")}
    env.update(extra)
    return env


# --- check ------------------------------------------------------------------------------------


def test_check_reports_each_hit_with_position_and_suggestion(tmp_path: Path) -> None:
    root = tmp_path / "case"
    write(root, "scripts/x.sh", f"#!/usr/bin/env bash\nset -eu\ncd {OLD}/scripts && ./x.sh\n")
    write(root, "docs/guide.md", f"# Guide\nRun `{OLD}/scripts/x.sh`, notes in /home/bob/notes.txt.\n")
    write(root, "config/app.json", f'{{"root": "{OLD}", "cfg": "{OLD}/config/app.json"}}\n')
    write(root, "src/main.ts", f'const p = "{OLD}/docs/guide.md";\n')
    write(root, "bin/tool", f"#!/bin/sh\nexec {OLD}/scripts/x.sh\n")
    # Not scanned: other kinds, skipped folders, binary and oversized files.
    write(root, "src/app.py", f'P = "{OLD}/scripts/x.sh"\n')
    write(root, "bin/perl-tool", f"#!/usr/bin/perl\n# {OLD}/scripts/x.sh\n")
    for skipped in (".git", "node_modules", ".launcher"):
        write(root, f"{skipped}/x.md", f"{OLD}/scripts/x.sh\n")
    write(root, "docs/blob.md", f"{OLD}/scripts/x.sh\0\n".encode())
    write(root, "docs/huge.md", f"{OLD}/scripts/x.sh\n" + "x" * MAX_BYTES)

    result = check(root)

    assert result.root == str(root.resolve())
    assert result.hard_coded_root == OLD
    got = [(h.file, h.line, h.column, h.found, h.suggestion) for h in result.hits]
    assert sorted(got) == [
        ("bin/tool", 2, 6, f"{OLD}/scripts/x.sh", "$CASE_ROOT/scripts/x.sh"),
        ("config/app.json", 1, 11, OLD, "$CASE_ROOT"),
        ("config/app.json", 1, 43, f"{OLD}/config/app.json", "$CASE_ROOT/config/app.json"),
        ("docs/guide.md", 2, 6, f"{OLD}/scripts/x.sh", "$CASE_ROOT/scripts/x.sh"),
        ("docs/guide.md", 2, 52, "/home/bob/notes.txt", OUTSIDE),
        ("scripts/x.sh", 3, 4, f"{OLD}/scripts", "$CASE_ROOT/scripts"),
        ("src/main.ts", 1, 12, f"{OLD}/docs/guide.md", "$CASE_ROOT/docs/guide.md"),
    ]
    assert result.count == 7


def test_root_is_the_prefix_most_hits_agree_on(tmp_path: Path) -> None:
    root = tmp_path / "h"
    write(root, "a/one.md", "x")
    write(root, "b/two.md", "x")
    write(
        root,
        "README.md",
        f"See {OLD}/a/one.md and {OLD}/b/two.md.\n"
        f"Logs go to {OLD}/tmp/run.log (not there yet).\n"
        "Bob keeps his copy in /home/bob/src/case/a/one.md.\n"
        "Unrelated: /home/bob/Downloads/file.zip\n",
    )
    result = check(root)
    assert result.hard_coded_root == OLD
    assert [h.suggestion for h in result.hits] == [
        "$CASE_ROOT/a/one.md",
        "$CASE_ROOT/b/two.md",
        "$CASE_ROOT/tmp/run.log",  # under the agreed root, though missing here
        "$CASE_ROOT/a/one.md",  # another laptop's root, confirmed by its own path
        OUTSIDE,
    ]
    assert result.hits[0].found == f"{OLD}/a/one.md"  # the sentence's full stop is not part of it


@pytest.mark.parametrize(
    "text",
    [
        "cd ~/dev/case\n",
        "see https://example.com/home/alice/page\n",
        "/var/home/alice/x and ./home/alice/y\n",
        "the /home folder, and /Users/ alone\n",
        "$HOME/dev/case/scripts\n",
    ],
)
def test_check_ignores_what_is_not_a_hard_coded_home_path(tmp_path: Path, text: str) -> None:
    write(tmp_path, "doc.md", text)
    result = check(tmp_path)
    assert (result.count, result.hits) == (0, [])


def test_check_refuses_a_missing_or_non_folder_root(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        check(tmp_path / "nope")
    with pytest.raises(InvalidInputError):
        check(write(tmp_path, "f.md", "x"))


# --- render -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected", "count"),
    [
        ("cd $CASE_ROOT/scripts", "cd /srv/case/scripts", 1),
        ("cd ${CASE_ROOT}/scripts", "cd /srv/case/scripts", 1),
        ("a=$CASE_ROOT b=${CASE_ROOT}x c=$CASE_ROOT.", "a=/srv/case b=/srv/casex c=/srv/case.", 3),
        (
            "$CASE_ROOT_X and ${CASE_ROOT_X} and $CASE_ROOTS",
            "$CASE_ROOT_X and ${CASE_ROOT_X} and $CASE_ROOTS",
            0,
        ),
        (r"\$CASE_ROOT and \${CASE_ROOT}", r"\$CASE_ROOT and \${CASE_ROOT}", 0),
        ("$$CASE_ROOT and $${CASE_ROOT}", "$$CASE_ROOT and $${CASE_ROOT}", 0),
        ("${CASE_ROOT:-/x} and $CASE_ROOT", "${CASE_ROOT:-/x} and /srv/case", 1),
    ],
)
def test_render_text(template: str, expected: str, count: int) -> None:
    assert render_text(template, "/srv/case") == (expected, count)


def test_render_text_inserts_the_root_literally() -> None:
    assert render_text("$CASE_ROOT/x", r"C:\a\1 \g<0>") == (r"C:\a\1 \g<0>/x", 1)


_FRAGMENTS = st.sampled_from(["$", "{", "}", "\\", "CASE_ROOT", "_X", "X", "/", " ", "\n", "é", "$CASE_ROOT", "a"])
_TEXTS = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=5)), max_size=20).map("".join)
# A root without `$` cannot form a new `$CASE_ROOT` with the text around it; with `$`,
# "${CASE_ROOT}CASE_ROOT" rendered for "x$" gives "x$CASE_ROOT", which is a template again.
_ROOTS = st.text(st.characters(exclude_characters="$"), max_size=30)


@settings(max_examples=400, deadline=None)
@given(text=_TEXTS, root=_ROOTS)
def test_render_is_idempotent(text: str, root: str) -> None:
    once, _ = render_text(text, root)
    assert render_text(once, root) == (once, 0)


@settings(max_examples=400, deadline=None)
@given(text=_TEXTS, root=st.text(max_size=30))
def test_render_never_changes_text_without_the_variable(text: str, root: str) -> None:
    if "$CASE_ROOT" in text or "${CASE_ROOT}" in text:
        return
    assert render_text(text, root) == (text, 0)


def test_render_mirrors_a_folder(tmp_path: Path) -> None:
    src, dest = tmp_path / "templates", tmp_path / "out" / "rendered"
    write(src, "AGENTS.md", "root: $CASE_ROOT, escaped: \\$CASE_ROOT, other: $CASE_ROOT_X\n")
    write(src, "scripts/go.sh", 'cd "${CASE_ROOT}/scripts"\n', mode=0o755)
    write(src, "cfg/app.json", '{"root": "$CASE_ROOT"}\n')
    write(src, "tool", "#!/bin/bash\necho $CASE_ROOT\n", mode=0o700)
    write(src, "notes.txt", "$CASE_ROOT stays\n")
    write(src, "img/logo.png", b"\x89PNG\0$CASE_ROOT")
    write(src, ".git/config", "$CASE_ROOT")  # never mirrored
    (src / "link.md").symlink_to(src / "AGENTS.md")

    result = render(src, dest, "/srv/case", atomic_write)

    assert snapshot(dest) == {
        "AGENTS.md": b"root: /srv/case, escaped: \\$CASE_ROOT, other: $CASE_ROOT_X\n",
        "cfg/app.json": b'{"root": "/srv/case"}\n',
        "img/logo.png": b"\x89PNG\0$CASE_ROOT",
        "notes.txt": b"$CASE_ROOT stays\n",
        "scripts/go.sh": b'cd "/srv/case/scripts"\n',
        "tool": b"#!/bin/bash\necho /srv/case\n",
    }
    assert (dest / "scripts/go.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "tool").stat().st_mode & 0o777 == 0o700
    assert (result.rendered, result.copied, result.replacements, result.skipped) == (4, 2, 4, ["link.md"])
    assert {f.file: f.action for f in result.files}["notes.txt"] == "copied"
    assert not list(tmp_path.rglob("*.tmp"))


def test_render_a_single_file(tmp_path: Path) -> None:
    src = write(tmp_path, "in/skill.md.tpl", "cd ${CASE_ROOT}\n")
    (tmp_path / "out").mkdir()
    render(src, tmp_path / "out", "/r", atomic_write)
    render(src, tmp_path / "named.md", "/r", atomic_write)
    assert (tmp_path / "out/skill.md.tpl").read_text() == "cd /r\n"
    assert (tmp_path / "named.md").read_text() == "cd /r\n"
    with pytest.raises(InvalidInputError, match="SRC itself"):
        render(src, src, "/r", atomic_write)
    with pytest.raises(InvalidInputError, match="UTF-8"):
        render(write(tmp_path, "bin.dat", b"\xff\xfe\0"), tmp_path / "x", "/r", atomic_write)
    with pytest.raises(NotFoundError):
        render(tmp_path / "missing", tmp_path / "x", "/r", atomic_write)


@pytest.mark.parametrize("inside", ["", "out", "a/deeper"])
def test_render_refuses_dest_inside_src(tmp_path: Path, inside: str) -> None:
    src = tmp_path / "src"
    write(src, "a.md", "$CASE_ROOT\n")
    before = snapshot(src)
    with pytest.raises(InvalidInputError, match="inside SRC"):
        render(src, src / inside, "/r", atomic_write)
    assert snapshot(src) == before


def test_render_refuses_to_write_into_src_or_through_symlinks(tmp_path: Path) -> None:
    # DEST contains SRC: mirroring `tpl/x.md` would land on SRC's own file.
    src = tmp_path / "tpl"
    write(src, "tpl/x.md", "$CASE_ROOT\n")
    with pytest.raises(InvalidInputError, match="inside SRC"):
        render(src, tmp_path, "/r", atomic_write)
    # A symlinked folder in DEST must not carry writes outside it.
    src2, dest, outside = tmp_path / "s2", tmp_path / "d2", tmp_path / "elsewhere"
    write(src2, "sub/x.md", "$CASE_ROOT\n")
    outside.mkdir()
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    with pytest.raises(InvalidInputError, match="symbolic link"):
        render(src2, dest, "/r", atomic_write)
    assert list(outside.iterdir()) == []


# --- fix --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "context"),
    [
        ("echo @", "unquoted"),
        ('echo "a @ b"', "double"),
        ("echo 'a @ b'", "single"),
        ('echo "$(ls @)"', "unquoted"),
        ('echo "${X:-@}"', "double"),
        ("X=${X:-@}", "unquoted"),
        ("echo `ls @`", "unquoted"),
        ("echo hi # see @", "comment"),
        ('echo "it\'s" @', "unquoted"),
        ("echo $((1<<2)) @", "unquoted"),
        ("cat <<EOF\n@\nEOF", "heredoc"),
        ("cat <<-'EOF'\n\t@\n\tEOF", "literal"),
        ("cat <<EOF; echo x\nbody\nEOF\necho @", "unquoted"),
    ],
)
def test_shell_contexts(line: str, context: str) -> None:
    text = f"set -eu\n{line}\n"
    offset = text.index("@")
    assert shell_contexts(text, {offset}) == {offset: context}


def test_shell_contexts_knows_the_shebang() -> None:
    assert shell_contexts("#!/home/a/bin/sh\n", {2}) == {2: "shebang"}


def harness(root: Path) -> Path:
    write(root, "config/app.json", '{"name": "demo"}\n')
    write(
        root,
        "scripts/where.sh",
        "#!/usr/bin/env bash\n"
        "set -eu\n"
        "# reads the config in /Users/alice/dev/case/config\n"
        "ROOT=/Users/alice/dev/case\n"
        'echo "root=$ROOT"\n'
        'echo "cfg=/Users/alice/dev/case/config/app.json"\n'
        "cat '/Users/alice/dev/case/config/app.json'\n"
        "cat <<EOF\n"
        "here=/Users/alice/dev/case/config\n"
        "EOF\n"
        "echo done\n",
        mode=0o755,
    )
    write(root, "tools/deep/where.sh", "#!/bin/sh\necho /Users/alice/dev/case/tools\n", mode=0o755)
    write(root, "top.sh", "#!/bin/sh\necho /Users/alice/dev/case/top.sh\n", mode=0o755)
    write(root, "AGENTS.md", "Run `/Users/alice/dev/case/scripts/where.sh`.\nNothing else here.\n")
    write(root, "src/root.ts", 'export const ROOT = "/Users/alice/dev/case";\n// keep /home/bob/x\n')
    return root


def run_script(script: Path, *, cwd: Path, env: dict[str, str]) -> str:
    shell = "bash" if script.read_text().startswith("#!/usr/bin/env bash") else "sh"
    rel = os.path.relpath(script, cwd)
    proc = subprocess.run([shell, rel], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=60)
    return proc.stdout


def test_fix_makes_scripts_find_their_own_root(tmp_path: Path) -> None:
    root = harness(tmp_path / "case")
    plan = plan_fix(root)
    apply_fix(plan, atomic_write)

    where = (root / "scripts/where.sh").read_text()
    expr = shell_root_expression(1)
    assert f'ROOT="{expr}"\n' in where
    assert f'echo "cfg={expr}/config/app.json"\n' in where
    assert f"cat ''\"{expr}\"'/config/app.json'\n" in where
    assert f"here={expr}/config\n" in where
    assert "# reads the config in $CASE_ROOT/config\n" in where
    assert shell_root_expression(2) in (root / "tools/deep/where.sh").read_text()
    assert '$(cd "$(dirname "$0")" && pwd)' in (root / "top.sh").read_text()
    assert (root / "AGENTS.md").read_text() == "Run `$CASE_ROOT/scripts/where.sh`.\nNothing else here.\n"
    assert (root / "src/root.ts").read_text() == 'export const ROOT = "$CASE_ROOT";\n// keep /home/bob/x\n'
    assert (root / "scripts/where.sh").stat().st_mode & 0o777 == 0o755

    # A copy somewhere else (with a space in its path) resolves itself, from any directory.
    copy = tmp_path / "other place" / "my case"
    shutil.copytree(root, copy)
    expected = f'root={copy}\ncfg={copy}/config/app.json\n{{"name": "demo"}}\nhere={copy}/config\ndone\n'
    assert run_script(copy / "scripts/where.sh", cwd=copy, env=clean_env()) == expected
    assert run_script(copy / "scripts/where.sh", cwd=tmp_path, env=clean_env()) == expected
    assert run_script(copy / "tools/deep/where.sh", cwd=copy / "tools", env=clean_env()) == f"{copy}/tools\n"
    assert run_script(copy / "top.sh", cwd=tmp_path, env=clean_env()) == f"{copy}/top.sh\n"

    # CASE_ROOT, when set, wins.
    other = tmp_path / "explicit"
    shutil.copytree(copy / "config", other / "config")
    got = run_script(copy / "scripts/where.sh", cwd=tmp_path, env=clean_env(CASE_ROOT=str(other)))
    assert got == f"root={other}\ncfg={other}/config/app.json\n" + '{"name": "demo"}\n' + f"here={other}/config\ndone\n"


def test_fix_changes_only_matching_lines_and_reports_a_diff(tmp_path: Path) -> None:
    root = harness(tmp_path / "case")
    before = snapshot(root)
    plan = plan_fix(root)
    result = plan.result
    assert result.hard_coded_root == "/Users/alice/dev/case"
    assert {f.file: f.lines for f in result.files} == {
        "AGENTS.md": [1],
        "scripts/where.sh": [3, 4, 6, 7, 9],
        "src/root.ts": [1],
        "tools/deep/where.sh": [2],
        "top.sh": [2],
    }
    assert (result.changed_files, result.replacements) == (5, 9)
    assert [(h.file, h.found) for h in result.unfixed] == [("src/root.ts", "/home/bob/x")]
    agents = next(f for f in result.files if f.file == "AGENTS.md")
    assert agents.diff.splitlines() == [
        "--- a/AGENTS.md",
        "+++ b/AGENTS.md",
        "@@ -1,2 +1,2 @@",
        "-Run `/Users/alice/dev/case/scripts/where.sh`.",
        "+Run `$CASE_ROOT/scripts/where.sh`.",
        " Nothing else here.",
    ]
    apply_fix(plan, atomic_write)
    after = snapshot(root)
    for rel, data in before.items():
        old_lines, new_lines = data.decode().splitlines(), after[rel].decode().splitlines()
        assert len(old_lines) == len(new_lines)
        changed = [n for n, (a, b) in enumerate(zip(old_lines, new_lines, strict=True), 1) if a != b]
        assert changed == next((f.lines for f in result.files if f.file == rel), [])


def test_fix_dry_run_writes_nothing_and_a_second_run_is_a_no_op(tmp_path: Path) -> None:
    root = harness(tmp_path / "case")
    before = snapshot(root)
    dry = plan_fix(root, dry_run=True)
    apply_fix(dry, atomic_write)
    assert snapshot(root) == before
    assert dry.result.dry_run
    assert dry.result.replacements == 9

    apply_fix(plan_fix(root), atomic_write)
    fixed = snapshot(root)
    again = plan_fix(root)
    assert (again.result.files, again.result.replacements, again.writes) == ([], 0, [])
    apply_fix(again, atomic_write)
    assert snapshot(root) == fixed


def test_fix_refuses_a_file_changed_since_planning(tmp_path: Path) -> None:
    root = harness(tmp_path / "case")
    plan = plan_fix(root)
    (root / "AGENTS.md").write_text("edited meanwhile /Users/alice/dev/case\n")
    with pytest.raises(InvalidInputError, match="changed while being fixed"):
        apply_fix(plan, atomic_write)
    assert (root / "AGENTS.md").read_text() == "edited meanwhile /Users/alice/dev/case\n"


def test_fix_leaves_shebangs_and_literal_heredocs_alone(tmp_path: Path) -> None:
    root = tmp_path / "case"
    write(root, "scripts/a.md", "x")
    text = "#!/Users/alice/dev/case/bin/sh\ncat <<'EOF'\n/Users/alice/dev/case/scripts/a.md\nEOF\n"
    write(root, "scripts/gen.sh", text)
    write(root, "README.md", "/Users/alice/dev/case/scripts/a.md\n")
    result = plan_fix(root).result
    assert [f.file for f in result.files] == ["README.md"]
    assert [(h.file, h.line) for h in result.unfixed] == [("scripts/gen.sh", 1), ("scripts/gen.sh", 3)]
