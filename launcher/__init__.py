"""launcher: run coding agents side by side, each in its own worktree and container."""

__version__ = "0.1.0"
