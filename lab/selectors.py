"""Traffic selectors as charon lists them (`10.10.2.20/32[tcp/http]`): which flows they cover.

Read by the verdicts (which SA carried a flow, which rule fell back to clear) and by the tests;
its own module so that the verdicts need not import the compiler.
"""

from __future__ import annotations

import ipaddress
import socket

from lab.model.services import PROTOCOL_NUMBERS


def covers(ts: str, address: str, protocol: str, port: int) -> bool:
    """Does a strongSwan TS string as listed by list-sas (`10.10.2.20/32[tcp/http]` or
    `10.10.2.20/32[tcp/80]`) cover this address, protocol and port?"""
    net, _, rest = ts.partition("[")
    if ipaddress.ip_address(address) not in ipaddress.ip_network(net, strict=False):
        return False
    if not rest:
        return True
    proto, _, p = rest.rstrip("]").partition("/")
    if proto not in (protocol, str(PROTOCOL_NUMBERS.get(protocol))):
        return False
    if not p or p in ("%any", "0"):
        return True
    if p.isdigit():
        return int(p) == port
    if "-" in p and all(x.isdigit() for x in p.split("-")):
        lo, hi = (int(x) for x in p.split("-"))
        return lo <= port <= hi
    return _port_number(p, protocol) == port


def _port_number(name: str, protocol: str) -> int | None:
    """The port charon named: it prints any port the services database knows by its name
    (getservbyport), e.g. `tcp/ssh` or `tcp/ms-sql-s`, so read the name back from the same
    database; the table below only covers a guest without one. An unknown name must not
    read as "no SA covers the flow": that turned ESP flows into `unobserved`."""
    if name in _SERVICE_PORTS:
        return _SERVICE_PORTS[name]
    try:
        return socket.getservbyname(name, protocol)
    except OSError:
        return None


# charon prints well-known ports by name in list-sas traffic selectors.
_SERVICE_PORTS = {"http": 80, "https": 443, "smtp": 25, "pop3": 110, "imap": 143, "imap2": 143,
                  "ldap": 389, "kerberos": 88, "domain": 53, "epmap": 135, "msft-gc": 3268}
