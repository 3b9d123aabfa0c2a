"""Building agent images from images/<NAME>, tagged by the hash of their content."""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from collections.abc import Callable, Mapping
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

# Build args that say where a build fetches from, not what it builds: they leave the image's
# tag (its content hash) alone. Any other build arg is part of the hash, so launcher/NAME:<hash>
# keeps meaning one content (an overridden version pin is another image).
SOURCE_BUILD_ARGS = frozenset(
    {
        "EXTRA_CA_CERTS",
        "NPM_CONFIG_REGISTRY",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        *(name for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY") for name in (proxy, proxy.lower())),
    }
)
_FROM_LAUNCHER = re.compile(
    rf"^\s*FROM\s+{re.escape(IMAGE_REPO_PREFIX)}([a-z0-9][a-z0-9._-]*)(?::latest)?\s*$", re.M | re.I
)
_ARG_DEFAULT = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)\s*$", re.M)
# npm's own words for "could not reach the registry" (npm 9 writes `npm ERR!`, npm 10+ `npm error`).
_NPM_UNREACHABLE = re.compile(
    r"npm (?:ERR!|error) (?:code (?:ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH"
    r"|ERR_SOCKET_TIMEOUT|E407|E403|E5\d\d|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY"
    r"|UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_\w+|DEPTH_ZERO_SELF_SIGNED_CERT)\b|network request to )"
)
_NPM_MISSING = re.compile(r"npm (?:ERR!|error) code (?:E404|ETARGET)\b")
# Build output kept for diagnosing a failed build: the end is where the cause is.
_KEPT_BUILD_CHARS = 64 * 1024
# The engine relays a step's stderr in colour, cut into pieces mid-line ("npm", " ", "ERR!").
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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


def content_hash(
    folder: Path, *, base_hashes: Mapping[str, str] | None = None, build_args: Mapping[str, str] | None = None
) -> str:
    """The folder's files; plus, when given, the hashes of the launcher images it is built FROM
    (a new agent base is a new agent image) and the build args that change what is built."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for name, value in sorted((base_hashes or {}).items()):
        digest.update(f"\0from\0{name}\0{value}".encode())
    for name, value in sorted((build_args or {}).items()):
        if name not in SOURCE_BUILD_ARGS:
            digest.update(f"\0arg\0{name}\0{value}".encode())
    return digest.hexdigest()[:16]


def launcher_bases(dockerfile: str) -> list[str]:
    """The launcher images a Dockerfile is built FROM (``FROM launcher/agent-base``)."""
    return list(dict.fromkeys(match.group(1) for match in _FROM_LAUNCHER.finditer(dockerfile)))


def parse_build_args(entries: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """``--build-arg`` values as a dict: ``KEY=VALUE``, or ``KEY`` alone for the value of KEY in
    launcher's environment (as ``docker build`` does); the value may be empty, never the key."""
    found: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidInputError(f"--build-arg {entry!r}: expected KEY=VALUE or KEY (KEY a variable name)")
        if not sep:
            if key not in environ:
                raise InvalidInputError(f"--build-arg {key}: no such variable in launcher's environment")
            value = environ[key]
        found[key] = value
    return found


def build_image(
    images_dir: Path,
    name: str,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    build_args: Mapping[str, str] | None = None,
    _building: tuple[str, ...] = (),
) -> ImageBuildResult:
    """Build launcher/NAME:<hash> (and tag it latest), first the launcher images it is FROM: the
    engine would otherwise look for launcher/agent-base on a registry, and an image built on an
    old base would keep its tag."""
    folder = images_dir / name
    if not (folder / "Dockerfile").is_file():
        known = sorted(p.name for p in images_dir.iterdir() if (p / "Dockerfile").is_file())
        raise NotFoundError(f"no image {name!r} in {images_dir}", hint=f"known images: {', '.join(known) or 'none'}")
    if name in _building:
        raise InvalidInputError(f"images {' -> '.join((*_building, name))} are built FROM each other")
    base_hashes = {}
    for base in launcher_bases((folder / "Dockerfile").read_text(errors="replace")):
        # A base gets only the args that say where to fetch from: its own pins are its own.
        source_args = {k: v for k, v in (build_args or {}).items() if k in SOURCE_BUILD_ARGS}
        built = build_image(
            images_dir, base, force=False, progress=progress, build_args=source_args, _building=(*_building, name)
        )
        base_hashes[base] = built.content_hash
    digest = content_hash(folder, base_hashes=base_hashes, build_args=build_args)
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
    image_id = _stream_build(client, folder, tag, digest, progress, dict(build_args or {}))
    try:
        client.images.get(image_id).tag(repo, "latest")
    except APIError as exc:
        raise DockerError(f"built {tag} but could not tag it latest: {exc}") from exc
    return ImageBuildResult(name=name, tag=tag, latest=latest, content_hash=digest, image_id=image_id, built=True)


def _stream_build(
    client: Any,
    folder: Path,
    tag: str,
    digest: str,
    progress: Callable[[str], None] | None,
    build_args: dict[str, str],
) -> str:
    from docker.errors import APIError

    image_id: str | None = None
    said: deque[str] = deque()
    kept = 0
    try:
        stream = client.api.build(
            path=str(folder),
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            buildargs=build_args or None,
            labels={labels.IMAGE: folder.name, labels.CONTENT_HASH: digest},
        )
        for event in stream:
            if "error" in event:
                log = _ANSI.sub("", "".join(said)).splitlines()
                raise build_failure(folder, tag, event["error"].strip(), log, build_args)
            text = event.get("stream")
            if text:
                said.append(text)
                kept += len(text)
                while kept > _KEPT_BUILD_CHARS and len(said) > 1:
                    kept -= len(said.popleft())
                if progress:
                    progress(text.rstrip("\n"))
            aux = event.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = aux["ID"]
    except APIError as exc:
        raise DockerError(f"building {tag} failed: {exc.explanation or exc}") from exc
    if image_id is None:
        image_id = client.images.get(tag).id
    return str(image_id)


def build_failure(folder: Path, tag: str, error: str, log: list[str], build_args: Mapping[str, str]) -> DockerError:
    """The error for a failed build; for an npm install that could not reach its registry, one
    that names the package, the registry and what to do, instead of the step's exit status."""
    said = "\n".join(log)
    packages = npm_packages((folder / "Dockerfile").read_text(errors="replace"), build_args)
    registry = build_args.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org/"
    host = re.sub(r"^\w+://", "", registry).split("/")[0]
    what = ", ".join(packages) or "the image's npm packages"
    if _NPM_UNREACHABLE.search(said):
        # npm's "network request to URL failed, reason: …" says most; else its error code.
        found = [line.strip() for line in log if _NPM_UNREACHABLE.search(line)]
        cause = next((line for line in found if "network request to" in line), found[0])
        return DockerError(
            f"building {tag} failed: could not fetch {what} from the npm registry "
            f"({host} unreachable from this build: {cause})",
            hint="build this image where npm is reachable, or set npm's registry or proxy with "
            "--build-arg NPM_CONFIG_REGISTRY=https://… or --build-arg HTTPS_PROXY=http://… "
            '(behind a TLS-intercepting proxy add --build-arg EXTRA_CA_CERTS="$(cat your-ca.pem)")',
        )
    if _NPM_MISSING.search(said):
        return DockerError(
            f"building {tag} failed: the npm registry ({host}) has no {what}",
            hint=f"check the version pinned in {folder / 'Dockerfile'} (or the mirror's copy of it)",
        )
    tail = "\n".join(log[-15:])
    return DockerError(f"building {tag} failed: {error}" + (f"\nlast build output:\n{tail}" if tail else ""))


def npm_packages(dockerfile: str, build_args: Mapping[str, str]) -> list[str]:
    """The pinned npm packages a Dockerfile installs: its ``ARG NPM_PACKAGE=name@version``
    (a build arg of that name wins)."""
    defaults = dict(_ARG_DEFAULT.findall(dockerfile))
    value = build_args.get("NPM_PACKAGE") or defaults.get("NPM_PACKAGE", "")
    return value.split()
