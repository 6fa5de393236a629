"""Predict one flow from the model: the result the wire should show, the rule on each side
that decides it, and why (docs/semantics.md is the reference for every step).

  source's packet -> exemption / block / permit / no rule: it leaves in clear
                  -> a Negotiate rule: IKE with the destination (or the tunnel's far end)
  clear on arrival -> the destination's rule: block drops it; Require without inbound
                  passthrough drops it; with passthrough it is accepted and the reply makes
                  the destination negotiate back (Request falls back to clear on silence)
  on the way      -> routes, firewalls (IKE, ESP/AH or the clear flow, both ways) and NAT
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lab.model.topology import Expectation, Host, IPv4Address, Result, Rule, Service, Topology
from lab.predict import path
from lab.predict.decide import Decision, Packet, decide
from lab.predict.ike import Negotiation, negotiate

MULTICAST_GROUP = ipaddress.IPv4Address("239.255.10.1")  # the group the lab's probes use


@dataclass(frozen=True)
class Flow:
    """One flow to predict: an expectation's, or one cell of the matrix."""

    source: str
    destination: str  # a host or a cluster (its VIP)
    service: Service
    via: str = "unicast"
    tamper: bool = False
    client: str = "lab"
    proxied_from: str | None = None

    @property
    def id(self) -> str:
        return Expectation(self.source, self.destination, self.service, Result.CLEAR, via=self.via,
                           tamper=self.tamper, proxied_from=self.proxied_from).id

    @classmethod
    def of(cls, exp: Expectation) -> Flow:
        return cls(exp.source, exp.destination, exp.service, exp.via, exp.tamper, exp.client, exp.proxied_from)


@dataclass(frozen=True)
class Prediction:
    flow: Flow
    result: str  # esp | ah | clear | dropped | tls | refused
    ike: str | None  # established | failed | None (no IKE was needed)
    source_side: str  # "fe: rule fe-be-http (require esp)"
    destination_side: str  # "be: no rule matches; default response rule (Respond Only)"
    why: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return self.flow.id

    @property
    def reason(self) -> str:
        return "; ".join(self.why)

    def to_dict(self) -> dict:
        return {"id": self.id, "from": self.flow.source, "to": self.flow.destination,
                "service": self.flow.service.name, "via": self.flow.via, "result": self.result,
                "ike": self.ike, "source_rule": self.source_side, "destination_rule": self.destination_side,
                "why": list(self.why)}


def target(topology: Topology, source: Host, name: str) -> tuple[Host, IPv4Address]:
    """The host that receives a flow to `name`, and the address the source sends to: a shared
    network's address first (a multi-homed firewall); a cluster's VIP on its owner node."""
    if name in {c.name for c in topology.clusters}:
        c = topology.cluster(name)
        return topology.host(c.owner), c.vip
    dst = topology.host(name)
    shared = [i.network for i in source.interfaces if dst.address_on(i.network)]
    return dst, dst.address_on(shared[0]) if shared else dst.addresses[0]


def source_address(topology: Topology, src: Host, dst: IPv4Address) -> IPv4Address:
    for i in src.interfaces:
        if dst in topology.network(i.network).subnet:
            return i.address
    if src.gateway:
        gw = topology.host(src.gateway)
        for i in src.interfaces:
            if gw.address_on(i.network):
                return i.address
    return src.addresses[0]


class _Predictor:
    """Works one flow out; `why` collects the steps in the words of the report."""

    def __init__(self, topology: Topology, flow: Flow):
        self.t, self.flow = topology, flow
        self.src = topology.host(flow.source)
        self.dst, unicast = target(topology, self.src, flow.destination)
        self.src_address = source_address(topology, self.src, unicast)
        self.dst_address = self._via_address(unicast)
        s = flow.service
        ports = (None, s.port) if s.protocol in ("tcp", "udp") else (None, None)
        self.packet = Packet(self.src_address, self.dst_address, s.protocol, *ports)
        self.why: list[str] = []
        self.ike: str | None = None
        self.source_side = self.destination_side = ""

    def _via_address(self, unicast: IPv4Address) -> IPv4Address:
        if self.flow.via == "broadcast":
            shared = [i.network for i in self.src.interfaces if self.dst.address_on(i.network)]
            return self.t.network(shared[0]).subnet.broadcast_address if shared else unicast
        return MULTICAST_GROUP if self.flow.via == "multicast" else unicast

    def done(self, result: str) -> Prediction:
        result = self._application(result)
        return Prediction(self.flow, result, self.ike, self.source_side, self.destination_side, tuple(self.why))

    def _application(self, result: str) -> str:
        """What a real client reports on top of the wire (B12): TLS, or IIS' 403.4."""
        servers, name = self.dst.servers, self.flow.service.name
        if result == "dropped":
            return result
        if self.flow.tamper and result in ("esp", "ah"):
            self.why.append("the router alters every protected packet: the receiver's integrity check drops them")
            return "dropped"
        if servers and servers.ssl_required and name == "http":
            self.why.append(f"{self.dst.name} requires SSL: plain HTTP is answered 403.4")
            return "refused"
        if self.flow.client == "real" and name == "https" and result == "clear":
            return "tls"
        return result

    # -- the source decides ------------------------------------------------------------------

    def predict(self) -> Prediction:
        d = decide(self.t, self.src, self.packet, outbound=True)
        self.source_side = f"{self.src.name}: {d.text}"
        self.destination_side = f"{self.dst.name}: " + decide(self.t, self.dst, self.packet, outbound=False).text
        if self.flow.via != "unicast":
            return self._broadcast(d)
        if d.kind == "block":
            self.why.append(f"{self.src.name} blocks it ({d.text})")
            return self.done("dropped")
        if d.kind == "negotiate":
            return self._tunnel(d.rule) if d.rule.tunnel_endpoint else self._negotiated(d.rule)
        self.why.append(f"{self.src.name} sends it in clear" + (f" ({d.text})" if d.kind != "none" else ""))
        return self._arrives_clear()

    def _broadcast(self, d: Decision) -> Prediction:
        if d.kind == "negotiate":
            self.why.append(f"{self.flow.via} cannot be protected by IPsec: nobody can negotiate "
                            f"for {self.dst_address}, so {d.text} holds it back")
            return self.done("dropped")
        if d.kind == "block":
            self.why.append(f"{self.src.name} blocks it ({d.text})")
            return self.done("dropped")
        self.why.append(f"{self.flow.via} to {self.dst_address} leaves in clear ({d.text})")
        return self.done("clear")

    # -- clear on arrival --------------------------------------------------------------------

    def _arrives_clear(self) -> Prediction:
        if why := path.blocked(self.t, path.both_ways(self.src, self.dst, self.packet, self.packet.protocol)):
            self.why.append(why)
            return self.done("dropped")
        d = decide(self.t, self.dst, self.packet, outbound=False)
        self.destination_side = f"{self.dst.name}: {d.text}"
        if d.kind == "block":
            self.why.append(f"{self.dst.name} blocks it ({d.text})")
            return self.done("dropped")
        if d.kind != "negotiate":
            self.why.append(f"{self.dst.name} accepts it in clear and answers in clear")
            return self.done("clear")
        rule = d.rule
        if rule.tunnel_endpoint or not rule.inbound_passthrough:
            self.why.append(f"{self.dst.name}: {d.text} requires IPsec and does not accept "
                            "unsecured packets (no inbound passthrough): the clear packet is dropped")
            return self.done("dropped")
        self.why.append(f"{self.dst.name} accepts the first packet in clear (inbound passthrough); "
                        "its answer needs IPsec, so it negotiates")
        n = negotiate(self.t, self.dst, self.dst_address, rule, self.src, self.src_address, self.packet.reply())
        self.source_side = f"{self.src.name}: answers with {n.responder}" if n.outcome != "silent" else self.source_side
        return self._after(n, rule, self.dst, self.src, self.dst_address, self.src_address)

    # -- the source negotiates ---------------------------------------------------------------

    def _negotiated(self, rule: Rule) -> Prediction:
        n = negotiate(self.t, self.src, self.src_address, rule, self.dst, self.dst_address, self.packet)
        if n.outcome != "silent":
            self.destination_side = f"{self.dst.name}: {n.responder} answers"
        return self._after(n, rule, self.src, self.dst, self.src_address, self.dst_address)

    def _after(self, n: Negotiation, rule: Rule, initiator: Host, responder: Host,
               ia: IPv4Address, ra: IPv4Address) -> Prediction:
        """The result once IKE between initiator and responder has had its say."""
        if n.outcome == "silent":
            self.why.append(n.reason)
            if rule.fallback_to_clear:
                seconds = self.t.policy(initiator.policy).fallback_seconds
                self.why.append(f"{initiator.name} falls back to clear after {seconds:g} s of IKE silence (soft SA)")
                self.ike = "failed"
                return self._arrives_clear() if initiator is self.src else self._clear_both_ways()
            self.ike = "failed"
            self.why.append(f"{rule.action.value} never falls back to clear")
            return self.done("dropped")
        if n.outcome == "refused":
            self.ike = "failed"
            self.why.append(f"IKE fails: {n.reason}; the peer answered, so the traffic stays blocked")
            return self.done("dropped")
        self.ike = "established"
        if not n.covers_flow:
            self.why.append(f"the SA is narrowed to {responder.name}'s {n.responder}, which leaves this "
                            "flow out: it goes into the narrowed SA and the clear answer is dropped (blackout)")
            return self.done("dropped")
        nat = path.crosses_nat(self.t, initiator, responder)
        if why := path.blocked(self.t, path.ipsec_packets(initiator, responder, ia, ra, n.protocol, nat)):
            self.why.append(f"IKE up ({n.reason}), but {why}")
            return self.done("dropped")
        self.why.append(f"IKE up: {n.reason}")
        return self.done(n.protocol)

    def _clear_both_ways(self) -> Prediction:
        if why := path.blocked(self.t, path.both_ways(self.src, self.dst, self.packet, self.packet.protocol)):
            self.why.append(why)
            return self.done("dropped")
        return self.done("clear")

    # -- tunnels through a gateway (B10) -----------------------------------------------------

    def _tunnel(self, rule: Rule) -> Prediction:
        gw = self.t.host(rule.tunnel_endpoint)
        gw_address = target(self.t, self.src, gw.name)[1]
        n = negotiate(self.t, self.src, self.src_address, rule, gw, gw_address, self.packet)
        if n.outcome != "established":
            return self._after(n, rule, self.src, gw, self.src_address, gw_address)
        self.why.append(f"tunnel {self.src.name} -> {gw.name}: {n.reason} ({gw.name}: {n.responder})")
        ingress = next((i.network for i in gw.interfaces if self.src.address_on(i.network)), gw.interfaces[0].network)
        egress = next((i.network for i in gw.interfaces if self.dst.address_on(i.network)), gw.interfaces[-1].network)
        for hop, p in ((path.Hop(gw, ingress), self.packet), (path.Hop(gw, egress), self.packet.reply())):
            if why := path.firewall_verdict(self.t, hop, p, p.protocol):
                self.why.append(f"decrypted on {gw.name}: {why}")
                return self.done("dropped")
        onward = decide(self.t, gw, self.packet, outbound=True)
        if onward.kind != "negotiate" or onward.rule.tunnel_endpoint != self.dst.name:
            self.why.append(f"{gw.name} forwards the decrypted packet in clear ({onward.text})")
            return self._arrives_clear()
        gw_out = target(self.t, self.dst, gw.name)[1]
        leg = negotiate(self.t, gw, gw_out, onward.rule, self.dst, self.dst_address, self.packet)
        if leg.outcome != "established":
            return self._after(leg, onward.rule, gw, self.dst, gw_out, self.dst_address)
        self.destination_side = f"{self.dst.name}: {leg.responder} answers {gw.name}"
        self.why.append(f"tunnel {gw.name} -> {self.dst.name}: {leg.reason} ({onward.text})")
        self.ike = "established"
        return self.done("esp" if "esp" in (n.protocol, leg.protocol) else n.protocol)


def predict_flow(topology: Topology, flow: Flow) -> Prediction:
    return _Predictor(topology, flow).predict()
