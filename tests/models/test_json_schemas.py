"""The JSON Schemas shipped for `--json` output: current with the models, and true of real output."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeWorld, commit_bundle
from jsonschema import Draft202012Validator

from launcher.models.details import RunDetails
from launcher.models.schemas import SCHEMAS, main, render, shipped
from launcher.models.views import RunView


def validate(name: str, document: object) -> None:
    schema = shipped(name)
    Draft202012Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft202012Validator(schema).iter_errors(document)
    ]
    assert errors == [], errors


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_shipped_schema_is_the_one_the_models_make(name: str) -> None:
    assert shipped(name) is not None
    assert (Path(__file__).resolve().parents[2] / "launcher" / "schemas" / name).read_text() == render(name), (
        "run `python -m launcher.models.schemas` after changing a model"
    )


def test_the_check_mode_passes_on_a_current_tree() -> None:
    assert main(["--check"]) == 0


def test_a_settled_runs_view_validates(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path)
    try:
        world.sandbox.agent = lambda _spec, out: (commit_bundle(out, "a" * 40), (0, b"<<<AGENT_RESULT\n{}\n"))[1]
        run = world.run_task()
        document = RunView.of(run).model_dump(mode="json")
        validate("run.schema.json", document)
        validate("ps.schema.json", [document])
    finally:
        world.close()


def test_a_view_with_a_key_the_schema_does_not_know_is_refused(tmp_path: Path) -> None:
    """The schema is strict where launcher writes: it catches output that drifted from it."""
    world = FakeWorld.make(tmp_path)
    try:
        document = RunView.of(world.run_task()).model_dump(mode="json")
    finally:
        world.close()
    document["surprise"] = 1
    with pytest.raises(AssertionError, match="surprise"):
        validate("run.schema.json", document)


def test_records_written_by_older_launchers_still_load_and_keep_what_they_had() -> None:
    old = {
        "base_sha": "b" * 40,
        "harvest": {"commits": [], "tip": "b" * 40, "diff": {"files_changed": 0, "insertions": 0, "deletions": 0}},
        "agent_result": {"state": "missing"},
        "a_key_of_an_older_launcher": {"nested": [1, 2]},
    }
    details = RunDetails.model_validate(old)
    assert details.harvest is not None
    assert details.harvest.tip == "b" * 40
    assert details.model_dump(mode="json") == old, "nothing invented, nothing lost"


def test_a_records_parts_print_only_what_they_were_given() -> None:
    assert RunDetails.model_validate({"pool_slot": "p1"}).model_dump(mode="json") == {"pool_slot": "p1"}
    assert RunDetails().model_dump(mode="json") == {}
