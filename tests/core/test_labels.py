"""launcher's label namespace: known keys only, and every object says whose root and what kind it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.core import labels
from launcher.errors import InvalidInputError


def test_launchers_own_labels_pass() -> None:
    made = labels.for_run(Path("/case"), "demo-1.1", "demo-1-x")
    assert labels.checked(made) == {
        "launcher.root": "/case",
        "launcher.kind": "run",
        "launcher.run-id": "demo-1.1",
        "launcher.task-id": "demo-1-x",
    }


def test_a_key_of_the_namespace_that_launcher_does_not_know_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="reserved namespace"):
        labels.checked({**labels.for_root(Path("/case"), "run"), "launcher.owner": "me"})


@pytest.mark.parametrize(
    "given",
    [{"launcher.kind": "run"}, {"launcher.root": "/case"}, {"launcher.root": "/case", "launcher.kind": "vm"}],
)
def test_an_object_without_a_root_or_a_known_kind_is_refused(given: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError):
        labels.checked(given)


def test_other_namespaces_are_left_to_their_owners() -> None:
    given = {**labels.for_root(Path("/case"), "egress-proxy"), "org.opencontainers.image.title": "x"}
    assert labels.checked(given) == given


def test_root_tags_differ_per_root_and_stay_stable() -> None:
    assert labels.root_tag(Path("/a")) == labels.root_tag(Path("/a")) != labels.root_tag(Path("/b"))
