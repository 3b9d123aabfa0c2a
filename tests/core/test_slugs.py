"""Slugs and IDs: the only user strings that become file names and git ref components.

Whatever text comes in, what comes out of slugify/validate_slug is either refused with
InvalidInputError or safe: canonical shape, no '/', no '..', no control characters, at most
48 characters.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from launcher.core.slugs import (
    PREFIX_MAX,
    PREFIX_RE,
    SLUG_MAX,
    SLUG_RE,
    TASK_ID_RE,
    make_task_id,
    repo_prefix,
    slugify,
    validate_prefix,
    validate_slug,
    validate_task_id,
)
from launcher.errors import InvalidInputError

HOSTILE = [
    "../x",
    "..",
    "../../etc/passwd",
    "a/b",
    "/abs",
    "x\x00y",
    "\x00",
    "abc\n",
    "\nabc",
    "a\nb",
    "a\rb",
    "tab\there",
    "\x1b[31mred",
    "$(rm -rf /)",
    "`id`",
    "a;b",
    "a|b",
    "a&&b",
    "a b",
    "ABC",
    "-a",
    "a-",
    "",
    " ",
    "-",
    "x" * 10_000,
    "é",
    "refs/heads/main",
    "a.lock",
    "@{-1}",
    "~1",
]
# Canonical slug: 1-48 of [a-z0-9-], starting and ending with a letter or digit.
CANONICAL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?")


def assert_safe(slug: str, *, max_length: int = SLUG_MAX) -> None:
    assert CANONICAL.fullmatch(slug), repr(slug)
    assert SLUG_RE.match(slug)
    assert 1 <= len(slug) <= max_length
    assert "/" not in slug
    assert ".." not in slug
    assert not any(unicodedata.category(ch).startswith("C") or ch.isspace() for ch in slug)


def has_slug_material(text: str) -> bool:
    """Whether any ASCII letter or digit survives Unicode folding."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.search(r"[a-zA-Z0-9]", folded) is not None


@given(st.text())
@example("../x")
@example("$(rm -rf /)")
@example("Fix: login redirect\n\x00 (again)")
@example("x" * 10_000)
@example("Ünïcödé — ﬁle ①")
def test_slugify_output_is_safe_canonical_and_idempotent(text: str) -> None:
    if not has_slug_material(text):
        # Refused only when nothing slug-worthy is left, and it says so.
        with pytest.raises(InvalidInputError, match="no letters or digits"):
            slugify(text)
        return
    slug = slugify(text)
    assert_safe(slug)
    assert slugify(slug) == slug
    assert validate_slug(slug) == slug


@given(st.text(), st.integers(min_value=1, max_value=SLUG_MAX))
def test_slugify_honours_max_length(text: str, max_length: int) -> None:
    if has_slug_material(text):
        assert_safe(slugify(text, max_length=max_length), max_length=max_length)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_ /.\n\x00", max_size=80))
@example("abc\n")
@example("demo\n")
def test_validate_slug_accepts_exactly_the_canonical_slugs(text: str) -> None:
    if CANONICAL.fullmatch(text):
        assert validate_slug(text) == text
        assert_safe(text)
    else:
        with pytest.raises(InvalidInputError, match="invalid slug"):
            validate_slug(text)


@given(st.from_regex(SLUG_RE))
def test_whatever_slug_re_admits_is_safe(text: str) -> None:
    """SLUG_RE is what validate_slug trusts; nothing it matches may carry a newline."""
    assert_safe(text)


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:20]))
def test_hostile_slugs_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_slug(text)
    assert "invalid slug" in caught.value.message
    assert "'/'" in (caught.value.hint or "")


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:20]))
def test_hostile_titles_slugify_to_safe_slugs_or_are_refused(text: str) -> None:
    if has_slug_material(text):
        assert_safe(slugify(text))
        return
    with pytest.raises(InvalidInputError, match="has no letters or digits") as caught:
        slugify(text)
    assert len(caught.value.message) < 200  # a long input is not echoed back whole


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("../x", "x"),
        ("$(rm -rf /)", "rm-rf"),
        ("Fix login redirect", "fix-login-redirect"),
        ("  --Déjà vu--  ", "deja-vu"),
        ("a\nb\x00c", "a-b-c"),
        ("x" * 10_000, "x" * SLUG_MAX),
        ("word " * 20, ("word-" * 10)[:SLUG_MAX].rstrip("-")),
    ],
)
def test_slugify_examples(text: str, slug: str) -> None:
    assert slugify(text) == slug


@pytest.mark.parametrize(
    ("validator", "value"),
    [(validate_slug, "fix-login\n"), (validate_prefix, "demo\n"), (validate_task_id, "demo-1-fix\n")],
    ids=["slug", "prefix", "task-id"],
)
def test_a_trailing_newline_is_refused(validator: object, value: str) -> None:
    """`$` in SLUG_RE / PREFIX_RE / TASK_ID_RE also matches before a final newline, so
    `--slug $'x\\n'` made a task whose ID, file names and branch end in a newline."""
    with pytest.raises(InvalidInputError):
        validator(value)  # type: ignore[operator]


@given(st.text(max_size=60))
def test_repo_prefix_is_a_valid_prefix(name: str) -> None:
    if not has_slug_material(name):
        with pytest.raises(InvalidInputError):
            repo_prefix(name)
        return
    prefix = repo_prefix(name)
    assert validate_prefix(prefix) == prefix
    assert len(prefix) <= PREFIX_MAX
    assert PREFIX_RE.match(prefix)


@given(
    prefix=st.from_regex(r"[a-z][a-z0-9]{0,10}(-[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True),
    number=st.integers(min_value=1, max_value=10**9),
    slug=st.from_regex(r"[a-z0-9](-?[a-z0-9]){0,20}", fullmatch=True),
)
def test_task_ids_round_trip(prefix: str, number: int, slug: str) -> None:
    """IDs parse back to their parts while no prefix segment is all digits. (`project-2024-3-x`
    is ambiguous by construction; the adoption test in tests/cli/test_task_cli.py covers it.)"""
    task_id = make_task_id(prefix, number, slug)
    assert validate_task_id(task_id) == task_id
    match = TASK_ID_RE.match(task_id)
    assert match is not None
    assert (match["prefix"], int(match["number"]), match["slug"]) == (prefix, number, slug)
