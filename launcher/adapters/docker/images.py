"""Building agent images from images/<NAME>, tagged by the hash of their content."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from launcher.adapters.docker.client import docker_client
from launcher.core import labels
from launcher.errors import DockerError, InvalidInputError, NotFoundError

IMAGE_REPO_PREFIX = "launcher/"
# Where setup.py puts the repository's images/ inside the package of a built wheel.
BUNDLED_IMAGES = "_images"


class ImageBuildResult(BaseModel):
    name: str
    tag: str
    latest: str
    content_hash: str
    image_id: str
    built: bool


def find_images_dir(explicit: str | None) -> Path:
    """The folder holding one build context per image: ``--images-dir``, else ``LAUNCHER_IMAGES_DIR``,
    else the contexts installed with launcher (a wheel's ``launcher/_images``, see setup.py), else
    ``images/`` of the source checkout launcher runs from (an editable install)."""
    for candidate in (explicit, os.environ.get("LAUNCHER_IMAGES_DIR")):
        if candidate:
            path = Path(candidate)
            if not path.is_dir():
                raise InvalidInputError(f"images folder {path} does not exist")
            return path
    found, looked = locate_bundled_images(resources.files("launcher"))
    if found is not None:
        return found
    raise NotFoundError(
        "no images folder found; looked in: " + "; ".join(looked),
        hint="pass --images-dir or set LAUNCHER_IMAGES_DIR, or install launcher from a wheel (it ships the images)",
    )


def locate_bundled_images(package: Traversable) -> tuple[Path | None, list[str]]:
    """Where the build contexts that came with the ``launcher`` package at ``package`` are, and
    every place looked at (for the error when none is found)."""
    if not isinstance(package, Path):
        # docker builds from a folder; a package imported from a zip has none to give it.
        return None, [f"{package} (launcher is not installed as files, so it carries no build contexts)"]
    installed, checkout = package / BUNDLED_IMAGES, package.parent / "images"
    if _has_contexts(installed):
        return installed, []
    looked = [f"{installed} (installed with launcher: {_why_not(installed)})"]
    # pyproject.toml beside the package marks launcher's own checkout, not any folder that
    # happens to be called images/ next to site-packages.
    if not (package.parent / "pyproject.toml").is_file():
        looked.append(f"{checkout} (not a source checkout: no pyproject.toml in {package.parent})")
    elif _has_contexts(checkout):
        return checkout, looked
    else:
        looked.append(f"{checkout} (source checkout: {_why_not(checkout)})")
    return None, looked


def _has_contexts(folder: Path) -> bool:
    return folder.is_dir() and any((child / "Dockerfile").is_file() for child in folder.iterdir())


def _why_not(folder: Path) -> str:
    return "no folder with a Dockerfile in it" if folder.is_dir() else "missing"


def content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def build_image(
    images_dir: Path, name: str, *, force: bool = False, progress: Callable[[str], None] | None = None
) -> ImageBuildResult:
    folder = images_dir / name
    if not (folder / "Dockerfile").is_file():
        known = sorted(p.name for p in images_dir.iterdir() if (p / "Dockerfile").is_file())
        raise NotFoundError(f"no image {name!r} in {images_dir}", hint=f"known images: {', '.join(known) or 'none'}")
    digest = content_hash(folder)
    repo = f"{IMAGE_REPO_PREFIX}{name}"
    tag, latest = f"{repo}:{digest}", f"{repo}:latest"
    client = docker_client()
    from docker.errors import APIError, ImageNotFound

    if not force:
        try:
            image = client.images.get(tag)
            image.tag(repo, "latest")
            return ImageBuildResult(
                name=name, tag=tag, latest=latest, content_hash=digest, image_id=image.id, built=False
            )
        except ImageNotFound:
            pass
    image_id = _stream_build(client, folder, tag, digest, progress)
    try:
        client.images.get(image_id).tag(repo, "latest")
    except APIError as exc:
        raise DockerError(f"built {tag} but could not tag it latest: {exc}") from exc
    return ImageBuildResult(name=name, tag=tag, latest=latest, content_hash=digest, image_id=image_id, built=True)


def _stream_build(client: Any, folder: Path, tag: str, digest: str, progress: Callable[[str], None] | None) -> str:
    from docker.errors import APIError

    image_id: str | None = None
    try:
        stream = client.api.build(
            path=str(folder),
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            labels={labels.IMAGE: folder.name, labels.CONTENT_HASH: digest},
        )
        for event in stream:
            if "error" in event:
                raise DockerError(f"building {tag} failed: {event['error'].strip()}")
            text = event.get("stream")
            if text and progress:
                progress(text.rstrip("\n"))
            aux = event.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = aux["ID"]
    except APIError as exc:
        raise DockerError(f"building {tag} failed: {exc.explanation or exc}") from exc
    if image_id is None:
        image_id = client.images.get(tag).id
    return str(image_id)
