"""Agent profiles: the coding agents launcher knows how to run, and the ones launcher.toml adds.

A profile is an image, a non-interactive command with the prompt as one argument (``{prompt}``)
or as a read-only file (``{prompt_file}``), the variables and ``--api-key`` routes it needs, the
hosts it may reach and its setup commands. The built-in commands use each CLI's documented
non-interactive mode; the run's container is the sandbox, so each CLI's own approval prompts are
off (nobody could answer them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from launcher.errors import InvalidInputError
from launcher.settings import AgentProfile, AgentSettings

PROMPT = "{prompt}"
PROMPT_FILE = "{prompt_file}"
# Where a run's prompt is, read-only (written into the run's sandbox folder by the host).
CONTAINER_PROMPT = "/launcher/prompt.md"
# The most of a prompt a run's record keeps (the file in the run holds all of it).
PROMPT_RECORD_MAX = 64 * 1024
# The biggest prompt a run takes (a --prompt-file or a task body).
PROMPT_MAX = 1024 * 1024
# The biggest prompt passed as one argument ({prompt}): Linux refuses an argument over 128 KiB,
# and the run's record keeps its command.
PROMPT_ARG_MAX = 96 * 1024

Source = Literal["built-in", "launcher.toml", "built-in, overridden by launcher.toml"]

BUILT_IN: dict[str, AgentProfile] = {
    "claude": AgentProfile(
        description="Claude Code (claude -p, print mode; permission prompts off: the run is the sandbox)",
        image="launcher/agent-claude:latest",
        command=["claude", "-p", PROMPT, "--dangerously-skip-permissions", "--output-format", "text"],
        api_keys={"ANTHROPIC_API_KEY": "https://api.anthropic.com"},
        env={"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
    ),
    "codex": AgentProfile(
        description="OpenAI Codex CLI (codex exec; its own sandbox off: the run is the sandbox)",
        image="launcher/agent-codex:latest",
        command=["codex", "exec", "--sandbox", "danger-full-access", "--skip-git-repo-check", PROMPT],
        api_keys={"OPENAI_API_KEY": "https://api.openai.com"},
    ),
    "gemini": AgentProfile(
        description="Gemini CLI (gemini -p, headless; approvals off: the run is the sandbox)",
        image="launcher/agent-gemini:latest",
        command=["gemini", "--approval-mode", "yolo", "-p", PROMPT],
        api_keys={"GEMINI_API_KEY": "https://generativelanguage.googleapis.com"},
    ),
    "aider": AgentProfile(
        description="aider (one message from the prompt file, every question answered yes, commits its "
        "edits); pass --api-key for your model's provider",
        image="launcher/agent-aider:latest",
        command=[
            "aider",
            "--yes-always",
            "--no-pretty",
            "--no-fancy-input",
            "--no-stream",
            "--analytics-disable",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-detect-urls",
            "--no-gitignore",
            "--no-suggest-shell-commands",
            "--no-show-model-warnings",
            "--message-file",
            PROMPT_FILE,
        ],
    ),
    "opencode": AgentProfile(
        description="opencode (opencode run, non-interactive); pass --api-key for your model's provider",
        image="launcher/agent-opencode:latest",
        command=["opencode", "run", PROMPT],
    ),
    "shell": AgentProfile(
        description="the prompt is a shell script (sh -c PROMPT) on the agent base image",
        image="launcher/agent-base:latest",
        command=["sh", "-c", PROMPT],
    ),
}


class AgentEntry(BaseModel):
    """A profile as `launcher agent list` shows it."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: Source
    default: bool = False
    profile: AgentProfile


def profiles(settings: AgentSettings) -> list[AgentEntry]:
    """Every profile: the built-ins, each replaced by a launcher.toml table of its name, then the rest."""
    entries = []
    for name in [*BUILT_IN, *sorted(set(settings.profiles) - set(BUILT_IN))]:
        source: Source
        if name in settings.profiles:
            source = "built-in, overridden by launcher.toml" if name in BUILT_IN else "launcher.toml"
            profile = settings.profiles[name]
        else:
            source, profile = "built-in", BUILT_IN[name]
        entries.append(AgentEntry(name=name, source=source, default=name == settings.default, profile=profile))
    return entries


def resolve(settings: AgentSettings, name: str | None) -> tuple[str, AgentProfile] | None:
    """The profile ``name`` (else [agent] default) names; None when neither names one."""
    chosen = name or settings.default
    if not chosen:
        return None
    if chosen in settings.profiles:
        return chosen, settings.profiles[chosen]
    if chosen in BUILT_IN:
        return chosen, BUILT_IN[chosen]
    known = ", ".join(entry.name for entry in profiles(settings))
    where = "--agent" if name else "[agent] default"
    raise InvalidInputError(
        f"{where} {chosen!r}: no such agent profile",
        hint=f"one of: {known}; or add an [agent.{chosen}] table to launcher.toml (`launcher agent list`)",
    )


def uses_prompt(command: list[str]) -> bool:
    return any(PROMPT in arg or PROMPT_FILE in arg for arg in command)


def substitute(command: list[str], prompt: str | None) -> list[str]:
    """The command with ``{prompt}`` and ``{prompt_file}`` replaced.

    ``{prompt}`` must be a whole argument: the prompt becomes exactly one argument of the
    agent's command and is never spliced into a longer string (which might be a shell's). The
    file's path is launcher's own, so ``--message-file={prompt_file}`` is fine."""
    if not uses_prompt(command):
        return list(command)
    for arg in command:
        if PROMPT in arg and arg != PROMPT:
            raise InvalidInputError(
                f"agent command argument {arg!r}: {PROMPT} must be an argument of its own",
                hint=f"the prompt is passed as one argument, never inside another; use {PROMPT_FILE} to read it "
                "from a file instead",
            )
    if prompt is None or not prompt.strip():
        raise InvalidInputError(
            "the agent's command takes a prompt ({prompt} or {prompt_file}), and there is none",
            hint="pass --prompt TEXT or --prompt-file FILE, or write the task's description into its .md",
        )
    if PROMPT in command and len(prompt.encode()) > PROMPT_ARG_MAX:
        raise InvalidInputError(
            f"the prompt has more than {PROMPT_ARG_MAX} bytes: too long for one argument of the agent's command",
            hint=f"use {PROMPT_FILE} in the agent's command (aider: --message-file), or a shorter prompt",
        )
    return [prompt if arg == PROMPT else arg.replace(PROMPT_FILE, CONTAINER_PROMPT) for arg in command]


def title_of(prompt: str, limit: int = 80) -> str:
    """A task title from a prompt: its first non-empty line, trimmed."""
    for line in prompt.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
    raise InvalidInputError("the prompt is empty", hint="say what the agent should do")
