"""`launcher image build`: build agent images from their build contexts, images/<NAME>."""

from __future__ import annotations

import os

import typer

from launcher.cli.app_context import emit_json

# What `launcher run` needs: the default agent image, and the proxy every networked run uses.
# The agent CLIs' images (agent-aider, agent-claude, …) are built when named.
RUN_IMAGES = ("agent-base", "egress-proxy")
# compose.yaml's name for the extra CA a build behind a TLS-intercepting proxy needs.
EXTRA_CA_ENV = "LAUNCHER_EXTRA_CA_CERTS"

image_app = typer.Typer(help="Build the agent images launcher runs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")


@image_app.command("build")
def build(
    names: list[str] = typer.Argument(
        None,
        metavar="[NAME]...",
        help="Folders under images/ to build (default: what runs need: agent-base and egress-proxy).",
    ),
    images_dir: str = typer.Option(
        None,
        "--images-dir",
        help="Where image folders live (default: $LAUNCHER_IMAGES_DIR, else the ones installed with launcher, "
        "else images/ of the source checkout).",
    ),
    force: bool = typer.Option(False, "--force", help="Build even when the content hash is unchanged."),
    build_arg: list[str] = typer.Option(
        None,
        "--build-arg",
        metavar="KEY=VALUE",
        help="A Dockerfile ARG (repeatable; KEY alone takes launcher's $KEY), e.g. NPM_CONFIG_REGISTRY=… or "
        f'EXTRA_CA_CERTS="$(cat ca.pem)" (default for EXTRA_CA_CERTS: ${EXTRA_CA_ENV}). Args saying where '
        "to fetch from (registries, proxies, CAs) leave the tag alone; others change it.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Build launcher/NAME:<content-hash> and tag it :latest; skipped when the hash is unchanged."""
    from launcher.adapters.docker.images import build_image, find_images_dir, parse_build_args

    args = parse_build_args(build_arg or [], os.environ)
    if "EXTRA_CA_CERTS" not in args and os.environ.get(EXTRA_CA_ENV):
        args["EXTRA_CA_CERTS"] = os.environ[EXTRA_CA_ENV]
    progress = None if as_json else (lambda line: typer.echo(line, err=True))
    folder = find_images_dir(images_dir)
    if progress:
        progress(f"build contexts: {folder}")
    results = []
    for name in names or RUN_IMAGES:
        result = build_image(folder, name, force=force, progress=progress, build_args=args)
        results.append(result.model_dump())
        if not as_json:
            verb = "built" if result.built else "up to date"
            typer.echo(f"{result.tag} ({verb}), also tagged {result.latest}")
    if as_json:
        emit_json(results[0] if len(results) == 1 else results)
