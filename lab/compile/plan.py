"""Compile a topology into a plan: the typed recipe (lab.contract.Plan) the executor runs inside the lab kernel.

The plan names every namespace, link, route, listener, daemon configuration and probe, so the
executor needs no knowledge of the model and stays lean (it runs in a guest where every import
and process start is expensive). The plan holds no secrets: the preshared key travels in a
separate file that the executor deletes once read.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets as _secrets

from lab.compile.firewall import firewall_plan, nat_aliases
from lab.compile.reply_guard import guard_plan
from lab.compile.strongswan import charon_settings, compile_host, runtime_hints
from lab.contract import HostPlan, Plan, Probe
from lab.model.topology import Expectation, Host, Topology

# Seconds; covers TCP's SYN retries at 1 s and 3 s while IKE runs, and a Windows soft SA that
# arrives after 3 s of IKE silence (the SYN retried at 7 s then gets through).
PROBE_TIMEOUT = 10.0
TAMPER_TIMEOUT = 4.0  # the SA is up already: a tampered flow fails fast or not at all
MULTICAST_GROUP = "239.255.10.1"  # administratively scoped: never leaves a lab network
SWITCH = "-switch"  # the switch namespace's key among host names (no host name starts with '-')


def namespace_names(run_id: str, topology: Topology) -> dict[str, str]:
    """Namespace per host plus SWITCH for the switch namespace that holds the bridges. Hosts get
    short internal ids (`h0`, `h1`, ...) whatever their names (up to 63 characters), like their
    interfaces (`eth0`, `h0i0`); the user's names stay in everything the user reads."""
    names = {h.name: f"lab-{run_id}-h{i}" for i, h in enumerate(topology.hosts)}
    names[SWITCH] = f"lab-{run_id}-sw"
    return names


def shared_network(a: Host, b: Host) -> str | None:
    nets_b = {i.network for i in b.interfaces}
    for i in a.interfaces:
        if i.network in nets_b:
            return i.network
    return None


def route_plan(topology: Topology, host: Host) -> list[dict]:
    if not host.gateway:
        return []
    gw = topology.host(host.gateway)
    net = shared_network(host, gw)
    return [{"dst": "default", "via": str(gw.address_on(net))}] if net else []


def source_address(topology: Topology, src: Host, dst_address: ipaddress.IPv4Address) -> str:
    """The address a probe leaves from: the interface facing the destination or the gateway."""
    for i in src.interfaces:
        if dst_address in topology.network(i.network).subnet:
            return str(i.address)
    if src.gateway:
        net = shared_network(src, topology.host(src.gateway))
        if net:
            return str(src.address_on(net))
    return str(src.addresses[0])


def destination_address(src: Host, dst: Host) -> ipaddress.IPv4Address:
    """Prefer the destination's address on a network both share (a multi-homed firewall)."""
    net = shared_network(src, dst)
    return dst.address_on(net) if net else dst.addresses[0]


def is_cluster(topology: Topology, name: str) -> bool:
    return any(c.name == name for c in topology.clusters)


def receiver(topology: Topology, name: str) -> Host:
    """The host an expectation's `to:` reaches: the host itself, or for a cluster the node holding
    its VIP at start (the owner; the verdict names the node that actually answered)."""
    return topology.host(topology.cluster(name).owner if is_cluster(topology, name) else name)


def target_address(topology: Topology, src: Host, name: str) -> ipaddress.IPv4Address:
    """Where a probe to `name` goes: a cluster's VIP, else the host's address facing `src`."""
    if is_cluster(topology, name):
        return topology.cluster(name).vip
    return destination_address(src, topology.host(name))


def listeners(topology: Topology) -> dict[str, list[dict]]:
    """Every service a host declares, plus every service an expectation names towards it (to a
    cluster: on every node, since whichever holds the VIP answers)."""
    wanted: dict[str, dict[tuple[str, int], str]] = {h.name: {} for h in topology.hosts}
    for h in topology.hosts:
        for s in h.services:
            wanted[h.name][(s.protocol, s.port)] = s.name
    groups: dict[str, set[tuple[str, str]]] = {h.name: set() for h in topology.hosts}
    for e in topology.expectations:
        hosts = topology.cluster(e.destination).nodes if is_cluster(topology, e.destination) else (e.destination,)
        for name in hosts:
            if e.service.protocol != "icmp":  # the kernel answers echo requests itself
                wanted[name].setdefault((e.service.protocol, e.service.port), e.service.name)
        if e.via == "multicast":  # joined on the interface facing the sender (no route needed)
            src, dst = topology.host(e.source), topology.host(e.destination)
            groups[e.destination].add((MULTICAST_GROUP, str(destination_address(src, dst))))
    return {
        host: [{"protocol": p, "port": port, "service": name,
                "groups": [{"group": g, "address": a} for g, a in sorted(groups[host])] if p == "udp" else []}
               for (p, port), name in sorted(svc.items())]
        for host, svc in wanted.items()
    }


def via_address(topology: Topology, exp: Expectation, unicast: ipaddress.IPv4Address) -> str:
    """Where a probe is sent: the host, the shared network's broadcast address, or a group."""
    if exp.via == "broadcast":
        net = shared_network(topology.host(exp.source), topology.host(exp.destination))
        return str(topology.network(net).subnet.broadcast_address)
    if exp.via == "multicast":
        return MULTICAST_GROUP
    return str(unicast)


def tamper_plan(topology: Topology, exp: Expectation, run_ns: dict[str, str]) -> dict | None:
    """The router on the path (the source's gateway) alters packets leaving towards the target."""
    if not exp.tamper:
        return None
    src, dst = topology.host(exp.source), receiver(topology, exp.destination)
    router = topology.host(src.gateway)
    out_net = next(i.network for i in dst.interfaces if router.address_on(i.network))
    dev = router.ifname(out_net)
    return {"router": router.name, "router_ns": run_ns[router.name], "dev": dev, "receiver_ns": run_ns[dst.name]}


def payload(service: str, marker: str, credential: str) -> tuple[str, str]:
    """What a client of this service would send first, carrying a fake login.

    Returns (payload, the credential exactly as it appears on the wire): the classifier looks
    for both the marker and that string in every unprotected packet.
    """
    if service in ("http", "https"):
        wire = base64.b64encode(f"probe:{credential}".encode()).decode()
        return f"GET /{marker} HTTP/1.0\r\nAuthorization: Basic {wire}\r\n\r\n", wire
    if service == "pop3":
        return f"USER {marker}\r\nPASS {credential}\r\n", credential
    if service == "imap":
        return f"a1 LOGIN {marker} {credential}\r\n", credential
    if service == "smtp":
        wire = base64.b64encode(f"\0probe\0{credential}".encode()).decode()
        return f"EHLO {marker}\r\nAUTH PLAIN {wire}\r\n", wire
    return f"{marker} {credential}\n", credential


def probe_plan(topology: Topology, index: int, exp: Expectation, run_ns: dict[str, str]) -> Probe:
    src = topology.host(exp.source)
    dst_address = target_address(topology, src, exp.destination)
    marker = f"LABPROBE-p{index}-{_secrets.token_hex(4)}"
    credential = f"fake-{_secrets.token_hex(6)}"
    text, on_wire = payload(exp.service.name, marker, credential)
    return Probe(
        id=f"p{index}",
        expectation=exp.id,
        src=src.name,
        src_address=source_address(topology, src, dst_address),
        dst=exp.destination,  # a host, or a cluster (its VIP): see `cluster`
        dst_address=via_address(topology, exp, dst_address),
        cluster=_cluster_target(topology, exp.destination),
        via=exp.via,
        tamper=tamper_plan(topology, exp, run_ns),
        protocol=exp.service.protocol,
        port=exp.service.port,
        service=exp.service.name,
        # A readable marker and a fake credential: if either shows on the wire, the flow leaked.
        marker=marker,
        payload=text,
        credential_on_wire=on_wire,
        timeout=TAMPER_TIMEOUT if exp.tamper else PROBE_TIMEOUT + exp.bulk_kilobytes / 64,
        bulk=exp.bulk_kilobytes * 1024,  # B16: bytes sent after the payload, timed
        nat_aliases=nat_aliases(topology),  # the classifier's second name for NATed addresses
    )


def _cluster_target(topology: Topology, name: str) -> dict | None:
    """A probe to a cluster: its nodes, and which one holds the VIP at start."""
    if not is_cluster(topology, name):
        return None
    c = topology.cluster(name)
    return {"name": c.name, "vip": str(c.vip), "nodes": list(c.nodes), "holder": c.owner}


def vip_addresses(topology: Topology, host: Host) -> list[dict]:
    """The VIP sits on the owner node's interface on the cluster's network at start."""
    out = []
    for c in topology.clusters:
        if c.owner == host.name:
            out.append({"address": f"{c.vip}/{topology.network(c.network).subnet.prefixlen}",
                        "ifname": host.ifname(c.network)})
    return out


def failover_plan(topology: Topology, name: str, run_ns: dict[str, str]) -> dict:
    """One scenario: who streams requests to the VIP, and how the VIP moves."""
    f = next(x for x in topology.failovers if x.name == name)
    c = topology.cluster(f.cluster)
    src = topology.host(f.source)
    target = next(n for n in c.nodes if n != c.owner)

    def node(name):
        h = topology.host(name)
        hi = [x.name for x in topology.hosts].index(name)
        # `port` is the node's end on the network's bridge, in the switch namespace.
        return {"host": name, "ns": run_ns[name], "ifname": h.ifname(c.network),
                "port": f"h{hi}i{h.interface_index(c.network)}"}
    prefix = topology.network(c.network).subnet.prefixlen
    return {
        "name": f.name, "mode": f.mode, "src": src.name, "src_ns": run_ns[src.name],
        "src_address": source_address(topology, src, c.vip), "vip": str(c.vip), "vip_cidr": f"{c.vip}/{prefix}",
        "switch_ns": run_ns[SWITCH],
        "protocol": f.service.protocol, "port": f.service.port, "service": f.service.name,
        "rate": f.rate, "max_seconds": f.max_seconds, "cleartext": f.cleartext,
        "from": node(c.owner), "to": node(target),
        "warmup": 2.0,
        # Long enough to see recovery under the slowest profile in play, with a hard cap.
        "deadline": min(max(f.max_seconds * 3, 20.0, _recovery_bound(topology, src) * 1.5), 900.0),
    }


def _recovery_bound(topology: Topology, host: Host) -> float:
    if not host.policy:
        return 0.0
    t = topology.policy(host.policy).timers
    return t.idle_seconds + t.renegotiate_seconds + 5


def build_plan(topology: Topology, run_id: str, outdir: str, failover: str | None = None,
               provider: str = "netns") -> Plan:
    """The plan, still open: the services step (lab.services.prepare) completes it, then the
    runner freezes it and writes it once (lab.contract)."""
    ns = namespace_names(run_id, topology)
    networks = [
        {"name": n.name, "bridge": f"br{i}", "subnet": str(n.subnet)}
        for i, n in enumerate(topology.networks)
    ]
    bridge_of = {n["name"]: n["bridge"] for n in networks}
    listen = listeners(topology)
    hosts = []
    for hi, h in enumerate(topology.hosts):
        prefixlen = {n.name: n.subnet.prefixlen for n in topology.networks}
        hosts.append(HostPlan(
            name=h.name,
            role=h.role,
            ns=ns[h.name],
            forward=h.forwards,
            interfaces=[
                {
                    "ifname": h.ifname(i.network),
                    "peer": f"h{hi}i{ii}",  # the switch-side end of the veth
                    "bridge": bridge_of[i.network],
                    "network": i.network,
                    "address": f"{i.address}/{prefixlen[i.network]}",
                }
                for ii, i in enumerate(h.interfaces)
            ],
            routes=route_plan(topology, h),
            listeners=listen[h.name],
            vips=vip_addresses(topology, h),
            firewall=firewall_plan(topology, h),  # tc filters and NAT (lab.compile.firewall)
            reply_guard=guard_plan(topology, h),  # IKEv1 Respond Only (lab.compile.reply_guard)
            charon={"conns": compile_host(topology, h), "settings": charon_settings(topology, h),
                    **runtime_hints(topology, h)} if h.policy else None,
        ))
    return Plan(
        run_id=run_id,
        topology=topology.name,
        outdir=outdir,
        switch_ns=ns[SWITCH],
        networks=networks,
        hosts=hosts,
        probes=[] if failover else [probe_plan(topology, i + 1, e, ns) for i, e in enumerate(topology.expectations)],
        failover=failover_plan(topology, failover, ns) if failover else None,
        nat_aliases=nat_aliases(topology),  # inside address -> its address outside the NAT
        provider=provider,
    )
