"""The topology model: what a policy designer wrote, validated and resolved.

Plain frozen dataclasses, no behaviour beyond lookups. The loader (lab.model.load) is the
only thing that builds them; everything downstream (compile, verdicts, report) reads them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network


class Result(str, Enum):
    """What happened to one flow, as seen on the wire."""

    ESP = "esp"  # delivered, carried in ESP (IP protocol 50)
    AH = "ah"  # delivered, carried in AH (IP protocol 51)
    AH_ESP = "ah+esp"  # delivered, AH around ESP
    CLEAR = "clear"  # delivered, unprotected
    DROPPED = "dropped"  # not delivered
    REFUSED = "refused"  # a real server answered and refused the request (HTTP 403: SSL required)
    TLS = "tls"  # delivered without IPsec inside TLS (a real HTTPS client): login never readable

    def __str__(self) -> str:
        return self.value


class Action(str, Enum):
    """Windows filter actions: Permit, Block, and Negotiate Security as Request or Require."""

    PERMIT = "permit"
    BLOCK = "block"
    REQUIRE = "require"  # negotiate; never falls back to clear
    REQUEST = "request"  # negotiate; falls back to clear when the peer stays silent (soft SA)


class Security(str, Enum):
    """Windows security methods (the IPsec protocol a Negotiate rule asks for)."""

    ESP = "esp"
    AH = "ah"


@dataclass(frozen=True)
class SecurityMethod:
    """One offer of a Negotiate rule, in Windows terms: ESP[3DES,SHA1]:100000k/3600s.

    Algorithm names are strongSwan keywords (3des, des, aes128, aes256, aes128gcm16,
    aes256gcm16, null; sha1, md5, sha256, sha384, sha512); None means the lab's modern default.
    """

    protocol: Security
    encryption: str | None = None  # ESP only; AEAD ciphers need no integrity
    integrity: str | None = None
    lifetime_seconds: int | None = None
    lifetime_kilobytes: int | None = None


@dataclass(frozen=True)
class IkeMethod:
    """One Main Mode (IKE SA) security method: encryption, integrity, Diffie-Hellman group."""

    encryption: str  # strongSwan keyword: 3des, des, aes128, aes256, ...
    integrity: str  # sha1, md5, sha256, ...
    dh_group: int  # 1, 2, 14, 19, 20, 31 (Windows: Low (1), Medium (2))


@dataclass(frozen=True)
class Service:
    """One protocol and port a host listens on and a probe connects to."""

    name: str  # "http", or the literal itself ("tcp/8080")
    protocol: str  # "tcp" or "udp"
    port: int

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Where:
    """Where a value came from, so later checks can name file, line and field."""

    file: str
    line: int
    field: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}"


@dataclass(frozen=True)
class Network:
    name: str
    subnet: IPv4Network


@dataclass(frozen=True)
class Interface:
    network: str
    address: IPv4Address


@dataclass(frozen=True)
class Endpoint:
    """One side of a filter: `me`, `any`, a host, an IP address or a subnet, resolved."""

    kind: str  # "me" | "any" | "host" | "address" | "subnet"
    text: str  # as written, for messages and connection names
    networks: tuple[IPv4Network, ...]  # resolved prefixes; empty for "me" until compiled per host

    def prefixes_for(self, host: Host) -> tuple[IPv4Network, ...]:
        """The prefixes this endpoint means when `host` applies the rule."""
        if self.kind == "me":
            return tuple(ipaddress.ip_network(f"{i.address}/32") for i in host.interfaces)
        return self.networks


@dataclass(frozen=True)
class Filter:
    """A Windows IP filter: addresses, protocol and ports; mirrored by default."""

    source: Endpoint
    destination: Endpoint
    protocol: str | None  # None = any IP protocol; "tcp", "udp", "icmp" or a number as text
    source_port: int | None
    destination_port: int | None
    mirrored: bool = True


@dataclass(frozen=True)
class Rule:
    name: str
    filter: Filter
    action: Action
    security: tuple[SecurityMethod, ...] = ()  # ordered offers, for request/require
    inbound_passthrough: bool = False  # accept unsecured inbound, always answer with IPsec (inpass)
    fallback_to_clear: bool = False  # soft SA when the peer does not answer IKE (request only)
    pfs_group: int | None = None  # session key PFS: a DH group for each Quick Mode
    where: Where | None = field(default=None, compare=False)
    # Tunnel mode: the host terminating the other end of the tunnel (`tunnel: fw`). The filter
    # is then the tunnel's inner selectors and need not be anchored on `me` (a gateway's legs).
    tunnel_endpoint: str | None = None

    @property
    def negotiates(self) -> bool:
        return self.action in (Action.REQUIRE, Action.REQUEST)


@dataclass(frozen=True)
class TimerProfile:
    """How an initiator notices that the peer behind a VIP is gone, in strongSwan timers.

    fast:              DPD after `dpd_seconds` of inbound silence, restart at once; a DELETE
                       re-arms the trap (close_action = trap).
    windows-2000:      Windows' 5 min SA idle timer, then a new Main Mode (up to 1 min).
    windows-2003-nlb:  NLBSFlags=1: 1 min idle, then 1 min Main Mode.
    `time_scale` shrinks every timer (0.05 turns 300 s into 15 s) so CI can run them.
    """

    name: str = "fast"
    time_scale: float = 1.0

    @property
    def idle_seconds(self) -> float:
        base = {"fast": 1.0, "windows-2000": 300.0, "windows-2003-nlb": 60.0}[self.name]
        return base * (1.0 if self.name == "fast" else self.time_scale)

    @property
    def renegotiate_seconds(self) -> float:
        """How long the initiator keeps retrying before it gives the old peer up."""
        base = {"fast": 3.0, "windows-2000": 60.0, "windows-2003-nlb": 60.0}[self.name]
        return base * (1.0 if self.name == "fast" else self.time_scale)


@dataclass(frozen=True)
class Policy:
    """An IPsec policy assigned to hosts. `respond` = the default response rule is active."""

    name: str
    description: str
    rules: tuple[Rule, ...]
    respond: bool  # answers IKE from any peer (Client (Respond Only) and the default response rule)
    builtin: bool = False
    fallback_seconds: float = 3.0  # IKE silence before a soft SA; 0.5 with Simple Policy Update
    timers: TimerProfile = TimerProfile()  # how its Negotiate rules notice a vanished peer
    # The default response rule's security methods as the administrator set them; empty: the
    # lab's default (the policy's own methods, modern and Windows default methods).
    respond_security: tuple[SecurityMethod, ...] = ()


@dataclass(frozen=True)
class FirewallRule:
    """One allow rule of a firewall host: host (or any) to host, protocol, optional port."""

    source: str  # a host name or "any"
    destination: str
    protocol: str | None  # "tcp" | "udp" | "icmp" | "esp" | "ah" | a number as text; None = any
    port: int | None = None  # destination port (tcp/udp); the reply direction matches it as source
    both_directions: bool = True
    where: Where | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        arrow = "<->" if self.both_directions else "->"
        what = self.protocol or "any"
        return f"{self.source}{arrow}{self.destination} {what}" + (f"/{self.port}" if self.port else "")


@dataclass(frozen=True)
class Firewall:
    """A packet filter on the traffic a firewall host routes between its networks."""

    default: str = "drop"  # "drop" | "accept"
    allow: tuple[FirewallRule, ...] = ()


@dataclass(frozen=True)
class Nat:
    """Stateless 1:1 address translation on a firewall: hosts on `inside` appear on the firewall's
    other network under an address of their own (`mapped`, host name -> outside address)."""

    on: str  # the firewall host
    inside: str  # network name
    outside: str  # the firewall's other network, where the mapped addresses live
    mapped: tuple[tuple[str, IPv4Address], ...] = ()


@dataclass(frozen=True)
class RealServers:
    """`servers: real` (or a mapping): Debian's daemons answer the host's services instead of the
    lab's listener: nginx (http, https), dovecot (pop3, imap), krb5kdc (kerberos), slapd (ldap, gc)."""

    proxy_to: str | None = None  # nginx forwards HTTP(S) requests to this host's port 80 (a front-end)
    ssl_required: bool = False  # plain HTTP answered 403 (IIS "Require SSL", 403.4)


@dataclass(frozen=True)
class Host:
    name: str
    role: str
    interfaces: tuple[Interface, ...]
    gateway: str | None = None
    policy: str | None = None  # None: the host speaks no IPsec
    services: tuple[Service, ...] = ()
    exemptions: int = 3  # NoDefaultExempt: 0 (Windows 2000) .. 3 (Windows Server 2003)
    cluster: str | None = None  # a node of this cluster (its policy and services come from it)
    # Machine certificate from the run's lab CA (authentication: certificates): "valid",
    # "revoked" (listed in the CA's CRL, which every peer loads) or "none" (cannot authenticate
    # IKE). The loader gives hosts without a policy "none".
    certificate: str = "valid"
    firewall: Firewall | None = None  # a packet filter on what this host routes (role firewall)
    servers: RealServers | None = None  # real daemons behind its services (lab.model.servers)

    @property
    def addresses(self) -> tuple[IPv4Address, ...]:
        return tuple(i.address for i in self.interfaces)

    @property
    def forwards(self) -> bool:
        """A host on two or more networks routes between them."""
        return len(self.interfaces) > 1

    def interface_index(self, network: str) -> int:
        return [i.network for i in self.interfaces].index(network)

    def ifname(self, network: str) -> str:
        """Its interface on `network` in the lab: eth0, eth1, ... in the order declared."""
        return f"eth{self.interface_index(network)}"

    def address_on(self, network: str) -> IPv4Address | None:
        for i in self.interfaces:
            if i.network == network:
                return i.address
        return None


@dataclass(frozen=True)
class Expectation:
    """One flow the designer predicts, with the result the wire must show."""

    source: str  # host name
    destination: str  # host name
    service: Service
    result: Result
    where: Where | None = field(default=None, compare=False)
    ike: str | None = None  # "established" | "failed": the IKE outcome between the two hosts
    via: str = "unicast"  # "broadcast" | "multicast": sent to the shared network's broadcast / a group
    tamper: bool = False  # the router on the path alters one byte of each protected packet
    behaviours: tuple[str, ...] = ()  # B1..B17 this expectation demonstrates
    bulk_kilobytes: int = 0  # B16: send this much data and measure the throughput (tcp only)
    client: str = "lab"  # "real": curl, kinit, ldapsearch, an IMAP/POP3 login instead of the lab's probe
    proxied_from: str | None = None  # the leg a proxy sends on behalf of that host's real-client request

    @property
    def id(self) -> str:
        """Stable, readable id used as the pytest case id and in reports."""
        suffix = "" if self.via == "unicast" else f"@{self.via}"
        suffix += f"@proxy-of-{self.proxied_from}" if self.proxied_from else ""
        return f"{self.source}->{self.destination}:{self.service.name}{suffix}" + (":tamper" if self.tamper else "")


@dataclass(frozen=True)
class Cluster:
    """A back-end cluster: nodes share a virtual IP that one node (the owner) holds at a time."""

    name: str
    vip: IPv4Address
    network: str  # the network whose subnet contains the VIP
    owner: str  # the node holding the VIP at start
    nodes: tuple[str, ...]  # hosts with `cluster: <name>`, in file order
    policy: str | None  # the IPsec policy every node applies (for traffic to and from the VIP)
    services: tuple[Service, ...] = ()


@dataclass(frozen=True)
class Failover:
    """One failover scenario: a steady stream of requests to the VIP while it moves."""

    name: str
    mode: str  # "planned" | "crash"
    source: str  # the host sending requests to the VIP
    cluster: str
    service: Service
    max_seconds: float  # the scenario fails when the outage is longer
    cleartext: str = "none"  # "none": no unprotected request may reach the VIP; "allowed"
    rate: float = 20.0  # requests per second
    slow: bool = False  # full-length Windows timers: run on request only
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    path: str
    ike_version: int
    auth_method: str
    networks: tuple[Network, ...]
    hosts: tuple[Host, ...]
    policies: tuple[Policy, ...]
    expectations: tuple[Expectation, ...]
    ike_methods: tuple[IkeMethod, ...] = ()  # empty: the lab's modern default
    ike_lifetime_minutes: int | None = None
    clusters: tuple[Cluster, ...] = ()
    failovers: tuple[Failover, ...] = ()
    nat: Nat | None = None  # address translation on a firewall (B8)

    def cluster(self, name: str) -> Cluster:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)
    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def network(self, name: str) -> Network:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)

    def policy(self, name: str) -> Policy:
        for p in self.policies:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def ipsec_hosts(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.policy)
