"""Building agent images from images/<NAME>, tagged by the hash of their content."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from launcher.adapters.docker.client import docker_client
from launcher.core import labels
from launcher.errors import DockerError, InvalidInputError, NotFoundError

IMAGE_REPO_PREFIX = "launcher/"


class ImageBuildResult(BaseModel):
    name: str
    tag: str
    latest: str
    content_hash: str
    image_id: str
    built: bool


def find_images_dir(explicit: str | None) -> Path:
    for candidate in (explicit, os.environ.get("LAUNCHER_IMAGES_DIR")):
        if candidate:
            path = Path(candidate)
            if not path.is_dir():
                raise InvalidInputError(f"images folder {path} does not exist")
            return path
    source_checkout = Path(__file__).resolve().parents[3] / "images"
    if source_checkout.is_dir():
        return source_checkout
    raise NotFoundError("no images folder found", hint="pass --images-dir or set LAUNCHER_IMAGES_DIR")


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
