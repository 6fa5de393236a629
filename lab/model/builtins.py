"""Built-in policies: the three Windows 2000/2003 ship, usable by name from any topology.

A host selects one with `policy: server-request-security`. To change one (say, to require
ESP only, or to turn the default response rule off), copy it into `policies:` under a new name
and edit the copy; a user policy may not reuse a built-in name. Server (Request Security),
written out in the topology format:

    policies:
      my-request-security:
        default_response: true                 # the default response rule (also the default)
        rules:
          - name: all-ip-traffic
            filter: {from: me, to: any}        # no protocol, no port: all IP traffic
            action: request                    # inbound passthrough and fallback to clear
            security:
              - {protocol: esp, encryption: 3des, integrity: sha1}
              - {protocol: esp, encryption: 3des, integrity: md5}
              - {protocol: ah, integrity: sha1}
              - {protocol: ah, integrity: md5}
          - name: all-icmp-traffic
            filter: {from: me, to: any, protocol: icmp}
            action: permit

Secure Server (Require Security) is the same with `action: require` and
`inbound_passthrough: true` (a require rule's default is false). Client (Respond Only) is a
policy with no rules: `my-respond-only: {rules: []}`.

Windows also lists ESP with DES (after 3DES, before AH); the lab keeps the 3DES and AH methods,
in Windows' order, and leaves DES out. Lifetimes are the lab's defaults.
"""

from __future__ import annotations

import ipaddress

from lab.model.topology import Action, Endpoint, Filter, Policy, Rule, Security, SecurityMethod

_ME = Endpoint("me", "me", ())
_ANY = Endpoint("any", "any", (ipaddress.IPv4Network("0.0.0.0/0"),))

# The security methods of the Request Security and Require Security filter actions.
WINDOWS_METHODS: tuple[SecurityMethod, ...] = (
    SecurityMethod(Security.ESP, "3des", "sha1"),
    SecurityMethod(Security.ESP, "3des", "md5"),
    SecurityMethod(Security.AH, None, "sha1"),
    SecurityMethod(Security.AH, None, "md5"),
)

_ALL_ICMP = Rule("all-icmp-traffic", Filter(_ME, _ANY, "icmp", None, None), Action.PERMIT)


def _all_ip_traffic(action: Action) -> Rule:
    return Rule(
        name="all-ip-traffic",
        filter=Filter(_ME, _ANY, None, None, None),
        action=action,
        security=WINDOWS_METHODS,
        inbound_passthrough=True,
        fallback_to_clear=action is Action.REQUEST,
    )


CLIENT_RESPOND_ONLY = Policy(
    name="client-respond-only",
    description=(
        "Client (Respond Only): answers IKE from any peer, never initiates; talks clear otherwise"
    ),
    rules=(),
    respond=True,
    builtin=True,
)

SERVER_REQUEST_SECURITY = Policy(
    name="server-request-security",
    description=(
        "Server (Request Security): asks for IPsec, accepts unsecured inbound, falls back to "
        "clear when the peer does not answer IKE"
    ),
    rules=(_all_ip_traffic(Action.REQUEST), _ALL_ICMP),
    respond=True,
    builtin=True,
)

SECURE_SERVER_REQUIRE_SECURITY = Policy(
    name="secure-server-require-security",
    description=(
        "Secure Server (Require Security): IPsec or nothing; accepts unsecured inbound but "
        "always answers with IPsec"
    ),
    rules=(_all_ip_traffic(Action.REQUIRE), _ALL_ICMP),
    respond=True,
    builtin=True,
)

BUILTIN_POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (CLIENT_RESPOND_ONLY, SERVER_REQUEST_SECURITY, SECURE_SERVER_REQUIRE_SECURITY)
}
