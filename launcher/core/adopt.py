"""Taking an existing case harness's task files into the coordinator without changing them.

Task files found that launcher has never seen are adopted as they are; their numbers are
reserved so new IDs continue after the highest one per prefix. A known file whose bytes
differ from what launcher last wrote was edited by hand: it is imported as the new truth
(its status change noted in the history as made outside launcher), never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from launcher.core.case_layout import era_of_file, parse_current_id
from launcher.core.ports import Coordinator, TaskFilesPort
from launcher.core.slugs import TASK_ID_RE
from launcher.core.transitions import statuses_of
from launcher.errors import LauncherError, NotFoundError, TransitionConflictError
from launcher.models import AdoptedTask


class FoundFile(BaseModel):
    path: str
    sha256: str
    data: bytes = Field(exclude=True)


class Problem(BaseModel):
    path: str
    error: str


class AdoptionReport(BaseModel):
    adopted: list[str] = Field(default_factory=list)
    changed_outside: list[str] = Field(default_factory=list)
    invalid: list[Problem] = Field(default_factory=list)
    legacy_md: list[str] = Field(default_factory=list, description=".md tasks with no .task.json")


def parse_id(task_id: str, repo: str | None = None) -> tuple[str, int, str] | None:
    """Split ``<prefix>-<N>-<slug>``. The form is ambiguous when the prefix ends in digits
    (``project-2024-2-beta``), so the task's own ``repo`` decides where the prefix ends."""
    if repo and task_id.startswith(f"{repo}-"):
        number, _, slug = task_id[len(repo) + 1 :].partition("-")
        number_ok = number.isascii() and number.isdigit() and not number.startswith("0") and len(number) < 12
        if number_ok and (not slug or TASK_ID_RE.match(f"x-1-{slug}")):
            return repo, int(number), slug
    match = TASK_ID_RE.match(task_id)
    if not match:
        return None
    return match["prefix"], int(match["number"]), match["slug"] or ""


class Adopter:
    def __init__(
        self,
        store: Coordinator,
        files: TaskFilesPort,
        repo_path_of: Callable[[str], str | None],
        read_md_title: Callable[[Path], str | None],
        *,
        base_ref: str = "HEAD",
        repo_url_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.store = store
        self.files = files
        # What adopted tasks' runs start from: the harness's files name none, [run].base_ref does.
        self.base_ref = base_ref
        self.repo_path_of = repo_path_of
        # The named repository's remote URL, so its tasks resolve where projects.json lacks it.
        self.repo_url_of = repo_url_of
        self.read_md_title = read_md_title

    def reconcile(
        self,
        found: list[FoundFile],
        legacy_md: list[Path],
        *,
        full: bool,
        known_paths: frozenset[str] = frozenset(),
    ) -> AdoptionReport:
        report = AdoptionReport()
        known = {t.file_path: t for t in self.store.list_tasks() if t.file_path} if full else {}
        for item in found:
            task = known.get(item.path)
            if task is None:
                if full or item.path not in known_paths:
                    self._adopt(item, report)
            elif task.file_sha256 and task.file_sha256 != item.sha256:
                self._import_change(task.id, item, report)
        for md in legacy_md:
            parsed = parse_id(md.name.removesuffix(".md"))
            if parsed:
                self.store.reserve_numbers(parsed[0], parsed[1])
            report.legacy_md.append(str(md))
        return report

    def _parse(self, item: FoundFile, report: AdoptionReport) -> dict[str, Any] | None:
        try:
            doc = json.loads(item.data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            report.invalid.append(Problem(path=item.path, error=f"not valid JSON: {exc}"))
            return None
        if not isinstance(doc, dict):
            report.invalid.append(Problem(path=item.path, error="not a JSON object"))
            return None
        era = era_of_file(item.path)
        known = statuses_of(era)
        if doc.get("status") not in {status.value for status in known}:
            report.invalid.append(
                Problem(
                    path=item.path,
                    error=f"unknown status {doc.get('status')!r} for a task of the {era.value} layout "
                    f"(its statuses: {', '.join(s.value for s in known)})",
                )
            )
            return None
        return doc

    def _adopt(self, item: FoundFile, report: AdoptionReport) -> None:
        doc = self._parse(item, report)
        if doc is None:
            # Unreadable, but its name still claims a number: never hand that number out.
            named = parse_id(Path(item.path).name.removesuffix(".task.json"))
            if named:
                self.store.reserve_numbers(named[0], named[1])
            return
        stem = Path(item.path).name.removesuffix(".task.json")
        task_id = doc.get("id") if isinstance(doc.get("id"), str) else stem
        named_repo = doc.get("repo") if isinstance(doc.get("repo"), str) else None
        current_slug = parse_current_id(str(task_id), named_repo) if named_repo else None
        if current_slug is not None:
            # Today's case makes IDs from a timestamp, not a number: the ID is its own prefix, so
            # it reserves no number launcher would hand out, and no launcher ID can equal it.
            prefix, number, slug = str(task_id), 1, current_slug
        else:
            parsed = parse_id(str(task_id), named_repo)
            if parsed is None:
                report.invalid.append(
                    Problem(
                        path=item.path, error=f"id {task_id!r} is neither <repo>-<N>-<slug> nor <repo>-<base36>-<slug>"
                    )
                )
                return
            prefix, number, slug = parsed
        repo = doc.get("repo") if isinstance(doc.get("repo"), str) else prefix
        md = Path(item.path).with_name(f"{stem}.md")
        title = self.read_md_title(md) or slug or str(task_id)
        try:
            self.store.adopt_task(
                AdoptedTask(
                    id=str(task_id),
                    prefix=prefix,
                    number=number,
                    slug=slug or stem,
                    title=title,
                    repo=str(repo),
                    repo_path=self.repo_path_of(str(repo)),
                    repo_url=self.repo_url_of(str(repo)) if self.repo_url_of else None,
                    base_ref=self.base_ref,
                    doc=doc,
                    file_path=item.path,
                    file_sha256=item.sha256,
                )
            )
        except TransitionConflictError:
            return  # another launcher process adopted it a moment ago
        except LauncherError as exc:
            report.invalid.append(Problem(path=item.path, error=exc.message))
            return
        report.adopted.append(str(task_id))

    def _import_change(self, task_id: str, item: FoundFile, report: AdoptionReport) -> None:
        # Under the task's lock: a launcher writer holds it from writing the file to recording
        # its hash, so a mismatch seen here is a real hand edit, not a write in progress.
        with self.files.locked(task_id):
            try:
                task = self.store.get_task(task_id)
            except NotFoundError:
                return
            path = Path(item.path)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return
            from hashlib import sha256

            digest = sha256(data).hexdigest()
            if digest == task.file_sha256:
                return
            doc = self._parse(FoundFile(path=item.path, sha256=digest, data=data), report)
            if doc is None:
                return
            if doc.get("id", task_id) != task_id:
                report.invalid.append(Problem(path=item.path, error=f"its id changed to {doc.get('id')!r}"))
                return
            self.store.import_external_change(task_id, doc, digest)
            report.changed_outside.append(task_id)
