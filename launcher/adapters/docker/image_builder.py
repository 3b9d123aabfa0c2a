"""Images for runs built on the host's engine from a repository's commit, and the up-front check
of any image a run is about to use.

The repository is read only through host git (``--git-dir``, from ``/``, ``GIT_*`` stripped: see
launcher/adapters/git.py) at a commit, never from a worktree an agent wrote: a devcontainer's
build context is ``git archive`` of that commit's folder, sent to the engine as a tar. Builds use
the engine's legacy builder (Engine 20.10 here), their log streamed to ``progress``.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from launcher.adapters.docker.client import docker_client
from launcher.adapters.docker.sandbox import tmpfs_options
from launcher.adapters.git import Repository
from launcher.core import labels
from launcher.core.ports.images import CommitBuild, ImageCheck
from launcher.core.ports.repo import RepoPort
from launcher.core.runlayout import CONTAINER_HOME
from launcher.errors import DockerError, InvalidInputError

# A build context is held in memory on its way to the engine.
MAX_CONTEXT_BYTES = 512 << 20
CHECK_TIMEOUT_S = 60
# An arbitrary uid with no account in any image, as a run's is.
CHECK_USER = "23456:23456"
# What the run's entry (launcher/adapters/docker/entry.sh) calls besides the shell's builtins.
NEEDED_COMMANDS = ("git", "cat", "cp", "head", "mkdir", "mktemp", "rm", "sed", "touch", "tr")
CHECK_SCRIPT = f"""
for c in {" ".join(NEEDED_COMMANDS)}; do
    command -v "$c" >/dev/null 2>&1 || echo "missing: $c"
done
if command -v git >/dev/null 2>&1; then
    git --version >/dev/null 2>&1 ||
        echo "problem: git does not run as an arbitrary uid: $(git --version 2>&1 | head -c 300)"
fi
: >/tmp/.launcher-check 2>/dev/null || echo "problem: /tmp is not writable"
: >"$HOME/.launcher-check" 2>/dev/null || echo "problem: \\$HOME ($HOME) is not writable"
echo launcher-check-done
"""


def _repository(repo: RepoPort) -> Repository:
    # The run service hands over the adapter's own Repository; anything else is re-opened the same way.
    if isinstance(repo, Repository):
        return repo
    return Repository(repo.toplevel, repo.git_dir, lock_dir=Path("/nonexistent"))


class DockerImageBuilder:
    def __init__(
        self,
        check_cache: Path,
        *,
        root: Path,
        connect: Callable[[], Any] = docker_client,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._check_cache = check_cache
        self._root = root
        # The run's own engine connection (the sandbox's), made when first needed: a second
        # client would cost a second ping and connection pool on every launch.
        self._connect = connect
        self._client: Any | None = None
        self._progress = progress

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    # -- the repository, through host git --------------------------------------------------

    def read_file(self, repo: RepoPort, commit: str, path: str, *, max_bytes: int) -> bytes | None:
        git = _repository(repo)
        listing = git.git("ls-tree", "-z", commit, "--", path).stdout.split(b"\0")[0]
        if not listing:
            return None
        mode, kind, oid = listing.split(b"\t", 1)[0].decode().split(" ")
        if kind != "blob" or mode not in ("100644", "100755"):
            what = "a symlink" if mode == "120000" else f"not a regular file (mode {mode})"
            raise InvalidInputError(f"{path} at {commit[:12]} is {what}; launcher reads only a regular file there")
        size = int(git.git_out("cat-file", "-s", oid))
        if size > max_bytes:
            raise InvalidInputError(f"{path} at {commit[:12]} is {size} bytes, more than {max_bytes}")
        return git.git("cat-file", "blob", oid).stdout

    def tree_id(self, repo: RepoPort, commit: str, path: str) -> str | None:
        # After the colon everything is the path (a ^{tree} there would be part of the name).
        spec = f"{commit}:{path}" if path else f"{commit}^{{tree}}"
        git = _repository(repo)
        proc = git.git("rev-parse", "--verify", "--quiet", spec, check=False)
        oid = proc.stdout.decode().strip()
        if proc.returncode != 0 or git.git_out("cat-file", "-t", oid) != "tree":
            return None
        return oid

    # -- images ----------------------------------------------------------------------------

    def find(self, tag: str) -> str | None:
        from docker.errors import APIError, ImageNotFound

        try:
            return str(self.client.images.get(tag).id)
        except ImageNotFound:
            return None
        except APIError as exc:
            raise DockerError(f"cannot inspect image {tag!r}: {exc.explanation or exc}") from exc

    def local_or_pull(self, ref: str) -> str:
        from docker.errors import APIError
        from docker.utils import parse_repository_tag

        found = self.find(ref)
        if found is not None:
            return found
        name, tag = parse_repository_tag(ref)
        if self._progress:
            self._progress(f"pulling {ref}")
        try:
            # Without a tag the SDK would pull every tag of the repository.
            return str(self.client.images.pull(name, tag=tag or "latest").id)
        except APIError as exc:
            raise DockerError(
                f"the devcontainer's image {ref!r} is not in the local engine and could not be pulled: "
                f"{exc.explanation or exc}"
            ) from exc

    def image_env(self, image_id: str) -> dict[str, str]:
        from docker.errors import APIError

        try:
            config = self.client.api.inspect_image(image_id).get("Config") or {}
        except APIError as exc:
            raise DockerError(f"cannot inspect image {image_id}: {exc.explanation or exc}") from exc
        pairs = (item.partition("=") for item in config.get("Env") or [])
        return {name: value for name, _, value in pairs}

    def build_from_commit(self, repo: RepoPort, build: CommitBuild) -> str:
        # A tree-ish ``commit:folder`` makes the folder the top of the archive, as a build context is.
        treeish = f"{build.commit}:{build.context}" if build.context else build.commit
        context = _repository(repo).git("archive", "--format=tar", treeish).stdout
        if len(context) > MAX_CONTEXT_BYTES:
            raise InvalidInputError(
                f"the devcontainer's build context {build.context or '.'!r} is {len(context) >> 20} MiB, "
                f"more than {MAX_CONTEXT_BYTES >> 20} MiB",
                hint="point build.context at a smaller folder",
            )
        return self._build(
            context,
            tag=build.tag,
            labels=build.labels,
            dockerfile=build.dockerfile,
            buildargs=build.args,
            target=build.target,
        )

    def build_dockerfile(self, dockerfile: str, *, tag: str, labels: dict[str, str]) -> str:
        buffer = io.BytesIO()
        data = dockerfile.encode()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return self._build(buffer.getvalue(), tag=tag, labels=labels, dockerfile="Dockerfile")

    def _build(
        self,
        context: bytes,
        *,
        tag: str,
        labels: dict[str, str],
        dockerfile: str,
        buildargs: dict[str, str] | None = None,
        target: str | None = None,
    ) -> str:
        from docker.errors import APIError

        image_id: str | None = None
        try:
            stream: Iterable[dict[str, Any]] = self.client.api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                dockerfile=dockerfile,
                tag=tag,
                labels=labels,
                buildargs=buildargs or None,
                target=target,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for event in stream:
                if "error" in event:
                    raise DockerError(f"building {tag} failed: {str(event['error']).strip()}")
                text = event.get("stream")
                if text and text.strip() and self._progress:
                    self._progress(str(text).rstrip("\n"))
                aux = event.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
        except APIError as exc:
            raise DockerError(f"building {tag} failed: {exc.explanation or exc}") from exc
        return image_id or self.find(tag) or _no_image(tag)

    # -- the run's contract ----------------------------------------------------------------

    def check(self, image_id: str) -> ImageCheck:
        marker = self._check_cache / (image_id.replace(":", "-") + ".ok")
        if marker.is_file() or self._built_by_launcher(image_id):
            return ImageCheck(image_id=image_id, cached=True)
        output = self._run_check(image_id)
        missing, problems = [], []
        for line in output.splitlines():
            if line.startswith("missing: "):
                missing.append(line.removeprefix("missing: "))
            elif line.startswith("problem: "):
                problems.append(line.removeprefix("problem: "))
        if "launcher-check-done" not in output:
            problems.append(f"the check did not finish: {output[-500:].strip() or 'no output'}")
        result = ImageCheck(image_id=image_id, missing=missing, problems=problems)
        if result.ok:
            # Only a pass is remembered: a failure is checked again (cheap, and says what is wrong now).
            self._check_cache.mkdir(parents=True, exist_ok=True)
            marker.write_text("ok\n")
        return result

    def _built_by_launcher(self, image_id: str) -> bool:
        """`launcher image build` made it from images/ (FROM the agent base, whose contract it is):
        no check container for it. A devcontainer image is the repository's: always checked."""
        from docker.errors import APIError, ImageNotFound

        try:
            found = self.client.images.get(image_id).labels or {}
        except (ImageNotFound, APIError):
            return False
        made = found.get(labels.IMAGE, "")
        return bool(made) and not made.startswith("devcontainer-")

    def _run_check(self, image_id: str) -> str:
        from docker.errors import APIError
        from requests.exceptions import RequestException

        try:
            container = self.client.containers.create(
                image=image_id,
                entrypoint=["/bin/sh", "-c", CHECK_SCRIPT],
                command=[],
                user=CHECK_USER,
                environment={"HOME": CONTAINER_HOME},
                working_dir="/",
                labels={labels.ROOT: str(self._root)},
                name=f"launcher-image-check-{uuid.uuid4().hex[:12]}",
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={path: tmpfs_options(path, CHECK_USER) for path in ("/tmp", CONTAINER_HOME)},
                pids_limit=64,
                mem_limit="256m",
                detach=True,
            )
        except APIError as exc:
            raise DockerError(f"cannot create a check container of image {image_id}: {exc.explanation or exc}") from exc
        try:
            try:
                container.start()
            except APIError as exc:
                # The engine could not start the shell at all: no /bin/sh in the image.
                return f"missing: /bin/sh ({exc.explanation or exc})\nlauncher-check-done\n"
            try:
                container.wait(timeout=CHECK_TIMEOUT_S)
            except RequestException as exc:  # the engine did not answer in time
                return f"problem: the check did not finish in {CHECK_TIMEOUT_S} s ({exc})\n"
            return bytes(container.logs(stdout=True, stderr=True)).decode(errors="replace")
        finally:
            # Gone already, or a leftover that carries the root's label for gc.
            with contextlib.suppress(APIError):
                container.remove(force=True)


def _no_image(tag: str) -> str:
    raise DockerError(f"building {tag} reported no image")
