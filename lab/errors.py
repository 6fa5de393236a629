"""Errors the lab reports to users. Each maps to one exit status and prints as one line."""

from __future__ import annotations


class LabError(Exception):
    """Base of every error the lab expects. `exit_code` is what the CLI returns."""

    exit_code = 2


class TopologyError(LabError):
    """Bad input in a topology file. Carries every problem found, each naming file, line, field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(self.problems[0] if self.problems else "invalid topology")

    def __str__(self) -> str:
        return "\n".join(self.problems)


class MissingTool(LabError):
    """A program or kernel feature the lab needs is not there; the message says how to get it."""


class ProviderError(LabError):
    """The guest, a namespace or a daemon could not be brought up."""

    exit_code = 3
