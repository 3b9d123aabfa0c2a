"""Adapters: how launcher talks to git, Docker, the state store and the task files."""
