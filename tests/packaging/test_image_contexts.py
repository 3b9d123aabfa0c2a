"""Where `launcher image build` finds the images' build contexts, without Docker.

An editable checkout reads the repository's images/; an installed wheel reads launcher/_images/
(copied there by setup.py); `--images-dir` and LAUNCHER_IMAGES_DIR win over both; when nothing is
found the error names every place looked at. The wheel itself is built and installed in
test_wheel_install.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import invoke

from launcher.adapters.docker import images as images_module
from launcher.adapters.docker.images import BUNDLED_IMAGES, content_hash, find_images_dir, locate_bundled_images
from launcher.cli.image_cmd import RUN_IMAGES
from launcher.errors import ExitCode

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_IMAGES = REPO_ROOT / "images"


def make_context(folder: Path, name: str) -> Path:
    (folder / name).mkdir(parents=True)
    (folder / name / "Dockerfile").write_text("FROM scratch\n")
    return folder


def test_the_checkout_finds_its_own_images_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAUNCHER_IMAGES_DIR", raising=False)
    found = find_images_dir(None)
    assert found == CHECKOUT_IMAGES
    for name in (*RUN_IMAGES, "postgres"):
        assert (found / name / "Dockerfile").is_file(), name


def test_every_file_a_dockerfile_copies_is_inside_its_own_folder() -> None:
    """A build context is one folder: the wheel ships exactly images/<NAME>/, so a COPY or ADD
    from outside it (../something) would build in the checkout and fail once installed."""
    for dockerfile in sorted(CHECKOUT_IMAGES.glob("*/Dockerfile")):
        folder = dockerfile.parent
        for line in dockerfile.read_text().splitlines():
            match = re.match(r"\s*(COPY|ADD)\s+(.*)", line, re.IGNORECASE)
            if not match:
                continue
            words = [w for w in match.group(2).split() if not w.startswith("--")]
            for source in words[:-1]:
                resolved = (folder / source).resolve()
                assert resolved.is_relative_to(folder), f"{dockerfile}: {source} is outside {folder}"
                assert resolved.exists(), f"{dockerfile}: {source} is missing"


def test_an_installed_package_uses_the_contexts_it_carries(tmp_path: Path) -> None:
    # Both present, as in a wheel unpacked next to a checkout: what came with the package wins.
    package = tmp_path / "launcher"
    make_context(package / BUNDLED_IMAGES, "agent-base")
    make_context(tmp_path / "images", "agent-base")
    (tmp_path / "pyproject.toml").write_text("")
    assert locate_bundled_images(package) == (package / BUNDLED_IMAGES, [])


def test_a_source_checkout_without_a_wheel_uses_its_images_folder(tmp_path: Path) -> None:
    package = tmp_path / "launcher"
    package.mkdir()
    make_context(tmp_path / "images", "agent-base")
    (tmp_path / "pyproject.toml").write_text("")
    found, looked = locate_bundled_images(package)
    assert found == tmp_path / "images"
    assert looked == [f"{package / BUNDLED_IMAGES} (installed with launcher: missing)"]


def test_an_images_folder_beside_site_packages_is_not_taken_for_a_checkout(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "launcher"
    package.mkdir(parents=True)
    make_context(tmp_path / "site-packages" / "images", "agent-base")  # some other distribution's
    found, looked = locate_bundled_images(package)
    assert found is None
    assert looked[1].endswith(f"(not a source checkout: no pyproject.toml in {package.parent})")


def test_nothing_found_is_exit_5_naming_every_place_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "launcher"
    (package / BUNDLED_IMAGES).mkdir(parents=True)  # present but empty
    monkeypatch.delenv("LAUNCHER_IMAGES_DIR", raising=False)
    monkeypatch.setattr(images_module.resources, "files", lambda name: package)
    result = invoke(["image", "build"])
    assert result.exit_code == ExitCode.NOT_FOUND == 5
    assert f"{package / BUNDLED_IMAGES} (installed with launcher: no folder with a Dockerfile in it)" in result.stderr
    assert f"{tmp_path / 'images'} (not a source checkout: no pyproject.toml in {tmp_path})" in result.stderr
    assert "--images-dir" in result.stderr


def test_the_environment_variable_and_the_option_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = make_context(tmp_path / "env", "agent-base")
    from_option = make_context(tmp_path / "option", "agent-base")
    monkeypatch.setenv("LAUNCHER_IMAGES_DIR", str(from_env))
    assert find_images_dir(None) == from_env
    assert find_images_dir(str(from_option)) == from_option


def test_the_content_hash_does_not_depend_on_where_the_context_is(tmp_path: Path) -> None:
    """The image tag is the content hash: the same files installed elsewhere must give the same
    tag, or a wheel would rebuild what the checkout already built."""
    for name in RUN_IMAGES:
        copy = tmp_path / name
        copy.mkdir()
        for path in (CHECKOUT_IMAGES / name).rglob("*"):
            if path.is_file():
                target = copy / path.relative_to(CHECKOUT_IMAGES / name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
        assert content_hash(copy) == content_hash(CHECKOUT_IMAGES / name)
