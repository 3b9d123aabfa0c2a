"""Task rules: creating tasks with coordinator-allocated IDs, and compare-and-set status."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from launcher.core.ports import Coordinator, TaskFilesPort
from launcher.core.slugs import slugify, validate_prefix, validate_slug
from launcher.core.transitions import TaskStatus, parse_status
from launcher.errors import InvalidInputError
from launcher.models import NewTask, TaskRecord, TransitionRecord, iso, utcnow

TITLE_MAX = 500
CROSS_REPO_PREFIX = "x"
BODY_MAX = 1_000_000
AGENT_PHASES = ("orchestrator", "implementer", "verifier", "reviewer", "closer")


@dataclass(frozen=True)
class RepoRef:
    """A repository as the core sees it: its task-ID prefix, where it lives, its remote URL."""

    name: str
    path: str | None
    url: str | None = None


def case_task_doc(repo: str) -> dict[str, Any]:
    """A fresh task document with case's fields and defaults (no launcher additions)."""
    return {
        "status": TaskStatus.ACTIVE.value,
        "created": iso(utcnow()),
        "repo": repo,
        "issueType": "freeform",
        "contractPath": None,
        "agents": {name: {"started": None, "completed": None, "status": "pending"} for name in AGENT_PHASES},
        "tested": False,
        "manualTested": False,
        "prUrl": None,
        "prNumber": None,
    }


def validate_title(title: str) -> str:
    cleaned = title.strip()
    if not cleaned:
        raise InvalidInputError("a task needs a non-empty --title")
    if len(cleaned) > TITLE_MAX:
        raise InvalidInputError(f"the title is {len(cleaned)} characters; at most {TITLE_MAX} are allowed")
    if any(unicodedata.category(ch) == "Cc" for ch in cleaned):
        raise InvalidInputError("the title may not contain control characters (newlines, NUL, escapes)")
    return cleaned


class TaskService:
    def __init__(self, store: Coordinator, files: TaskFilesPort, *, actor: str = "launcher") -> None:
        self.store = store
        self.files = files
        self.actor = actor

    def create(
        self,
        repo: RepoRef,
        title: str,
        *,
        slug: str | None = None,
        body: str | None = None,
        image: str | None = None,
        command: list[str] | None = None,
        base_ref: str = "HEAD",
        queued: bool = False,
        template: str | None = None,
        cross_repo: bool = False,
    ) -> TaskRecord:
        """Store a new task. A cross-repo task takes case's ``x-<N>-<slug>`` ID; ``repo``
        names its primary repository, where its runs take place."""
        clean_title = validate_title(title)
        clean_slug = validate_slug(slug) if slug is not None else slugify(clean_title)
        prefix = CROSS_REPO_PREFIX if cross_repo else validate_prefix(repo.name)
        if body is not None and len(body) > BODY_MAX:
            raise InvalidInputError(f"the task body is {len(body)} characters; at most {BODY_MAX}")
        if body is not None and "\x00" in body:
            raise InvalidInputError("the task body contains a NUL character")
        task = self.store.create_task(
            NewTask(
                prefix=prefix,
                slug=clean_slug,
                title=clean_title,
                repo=repo.name,
                repo_path=repo.path,
                repo_url=repo.url,
                base_ref=base_ref,
                image=image,
                command=list(command or []),
                queued=queued,
                doc=case_task_doc(repo.name),
            )
        )
        return self.files.create(task.id, body, template)

    def get(self, ref: str) -> TaskRecord:
        return self.store.resolve_task(ref)

    def list_tasks(self, status: str | None = None) -> list[TaskRecord]:
        return self.store.list_tasks(parse_status(status) if status else None)

    def enqueue(self, refs: list[str]) -> list[TaskRecord]:
        """Queue tasks for batch workers (again, if they ran before); every ref must resolve first."""
        return self.store.enqueue([self.get(ref).id for ref in refs])

    def history(self, ref: str) -> list[TransitionRecord]:
        return self.store.history(self.get(ref).id)

    def set_status(
        self,
        ref: str,
        target: str,
        *,
        expected: str | None = None,
        reason: str | None = None,
        actor: str | None = None,
    ) -> TaskRecord:
        """Compare-and-set the status.

        Without ``expected`` the caller's expectation is the status it reads now, which
        still loses cleanly (conflict) if another writer moves the task in between.
        """
        task = self.get(ref)
        wanted = parse_status(target)
        source = parse_status(expected) if expected else task.status
        updated, transition = self.store.transition(task.id, source, wanted, reason=reason, actor=actor or self.actor)
        self.files.record_transition(task.id, transition)
        return updated

    def sync_files(self, ref: str) -> TaskRecord:
        return self.files.sync(self.get(ref).id)
