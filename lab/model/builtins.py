"""Built-in policies: the ones Windows ships, usable by name from any topology."""

from __future__ import annotations

from lab.model.topology import Policy

CLIENT_RESPOND_ONLY = Policy(
    name="client-respond-only",
    description=(
        "Client (Respond Only): answers IKE from any peer, never initiates; talks clear otherwise"
    ),
    rules=(),
    respond=True,
    builtin=True,
)

BUILTIN_POLICIES: dict[str, Policy] = {p.name: p for p in (CLIENT_RESPOND_ONLY,)}
