"""The `clusters:` and `failover:` parts of a topology file (behaviour B9, KB 821839).

A cluster is a set of back-end nodes sharing a virtual IP (VIP) that one node, the owner,
holds at a time. Nodes are ordinary hosts with `cluster: NAME`; they take their IPsec policy and
services from the cluster, so everything downstream sees them as IPsec hosts. Filters and
expectations may name a cluster, meaning its VIP. A failover scenario streams requests from a
host to the VIP while the VIP moves (planned) or its owner dies (crash).
"""

from __future__ import annotations

from dataclasses import replace

from lab.model.errors_text import Loc, field_name, suggest
from lab.model.raw import Reader, as_bool, as_ipv4, as_list, as_map, as_number, as_str
from lab.model.services import parse_service
from lab.model.topology import Cluster, Failover, IPv4Address, Network, Service

_KEYWORDS = ("me", "any")  # filter keywords: a cluster of that name could not be told apart


class ClusterReader(Reader):
    """Reads `clusters:` once the hosts are built, and `failover:` once the clusters are."""

    def read_clusters(self, networks: dict[str, Network], used: dict[IPv4Address, Loc]) -> None:
        """Build self.clusters; each node's Host takes the cluster's policy and services.

        `used` maps every host address to where it was given; VIPs are added to it.
        """
        members = self._nodes()
        for name, spec in self.raw_clusters.items():
            path = ("clusters", name)
            if name in _KEYWORDS:
                self.error(path, f"{name!r} is a filter keyword; choose another name")
            elif name in self.raw_hosts:
                self.error(path, f"{name!r} is already a host name; a cluster needs a name of "
                           "its own, as filters may name either")
            if not isinstance(spec, dict):
                continue
            nodes = members.get(name, [])
            vip = self._vip(path + ("vip",), spec.get("vip"), networks, used)
            owner = spec.get("owner")
            if isinstance(owner, str) and owner not in nodes:
                them = f"its nodes are {', '.join(nodes)}" if nodes else "it has no nodes"
                self.error(path + ("owner",), f"{owner!r} is not a node of cluster {name!r}"
                           f"{suggest(owner, nodes)}; {them}")
            if len(nodes) < 2:
                self.error(path, f"a cluster needs at least 2 nodes (hosts with cluster: {name}); "
                           f"it has {len(nodes)}{' (' + nodes[0] + ')' if nodes else ''}")
            self.check_policy(path + ("policy",), spec.get("policy"))
            services = self.read_services(path + ("services",), as_list(spec.get("services")))
            if vip is None:
                continue
            address, network = vip
            for node in nodes:
                if self.hosts[node].address_on(network) is None:
                    self.error(("hosts", node, "cluster"), f"{node} has no interface on "
                               f"{network}, the network of cluster {name}'s VIP {address}")
            if owner in nodes and len(nodes) >= 2:
                self.clusters[str(name)] = Cluster(
                    str(name), address, network, str(owner), tuple(nodes),
                    as_str(spec.get("policy")), services)
        for cluster in self.clusters.values():
            for node in cluster.nodes:
                self.hosts[node] = replace(self.hosts[node], policy=cluster.policy,
                                           services=cluster.services, cluster=cluster.name)

    def _nodes(self) -> dict[str, list[str]]:
        """Cluster name -> its nodes in file order; problems of `cluster:` in hosts reported."""
        out: dict[str, list[str]] = {}
        for name, spec in self.raw_hosts.items():
            cluster = as_map(spec).get("cluster")
            if not isinstance(cluster, str) or name not in self.hosts:
                continue
            path = ("hosts", name)
            own = [key for key in ("policy", "services") if key in spec]
            if own:
                self.error(path + (own[0],), "a cluster node takes its policy and services "
                           f"from cluster {str(cluster)!r}")
            if cluster not in self.raw_clusters:
                self.no_cluster(path + ("cluster",), cluster)
            else:
                out.setdefault(str(cluster), []).append(str(name))
        return out

    def _vip(self, path: Loc, text: object, networks: dict[str, Network],
             used: dict[IPv4Address, Loc]) -> tuple[IPv4Address, str] | None:
        """(VIP, its network), or None: not an address (the schema said so) or no network."""
        address = as_ipv4(text)
        if address is None:
            return None
        inside = [n for n in networks.values() if address in n.subnet]
        if not inside:
            known = ", ".join(f"{n.name} ({n.subnet})" for n in networks.values()) or "none"
            self.error(path, f"{address} is in no network; networks are {known}")
            return None
        if len(inside) > 1:
            self.error(path, f"{address} is in more than one network "
                       f"({', '.join(n.name for n in inside)}); a VIP belongs to exactly one")
            return None
        self.check_address(path, address, inside[0])
        if address in used:
            self.error(path, f"{address} is already used by {field_name(used[address])} "
                       f"(line {self.doc.line(used[address])})")
        used.setdefault(address, path)
        return address, inside[0].name

    # failover scenarios

    def failovers(self, raw: list) -> tuple[Failover, ...]:
        if raw and not self.raw_clusters:
            self.error(("failover",), "failover needs a cluster; define one under clusters: "
                       "and give its nodes cluster: NAME")
            return ()
        out, seen = [], {}
        for i, spec in enumerate(raw):
            if not isinstance(spec, dict):
                continue
            path, name = ("failover", i), spec.get("name")
            if isinstance(name, str) and name in seen:
                self.error(path + ("name",), f"scenario {str(name)!r} is already defined at "
                           f"line {seen[name]}")
            elif isinstance(name, str):
                seen[name] = self.doc.line(path)
            if scenario := self._failover(path, spec):
                out.append(scenario)
        return tuple(out)

    def _failover(self, path: Loc, spec: dict) -> Failover | None:
        cluster = self._failover_cluster(path, spec.get("to"))
        source = spec.get("from")
        ok = isinstance(source, str) and self._check_source(path + ("from",), source, cluster)
        service = self._failover_service(path + ("service",), spec.get("service"), cluster)
        max_seconds, rate = as_number(spec.get("max_seconds")), as_number(spec.get("rate", 20))
        if not ok or cluster is None or service is None or max_seconds is None or rate is None:
            return None
        cleartext = spec.get("cleartext", "none")
        return Failover(
            name=str(spec.get("name")),
            mode="crash" if spec.get("mode") == "crash" else "planned",
            source=str(source),
            cluster=str(cluster),
            service=service,
            max_seconds=max_seconds,
            cleartext="allowed" if cleartext == "allowed" else "none",
            rate=rate,
            slow=as_bool(spec.get("slow"), False),
            where=self.doc.where(path),
        )

    def _check_source(self, path: Loc, source: str, cluster: str | None) -> bool:
        """A host outside the cluster sends the requests. False when `from` names no host."""
        if source in self.raw_hosts:
            if cluster and source in self.clusters[cluster].nodes:
                self.error(path, f"{source!r} is a node of cluster {cluster!r}; requests come "
                           "from a host outside the cluster")
            return True
        if source in self.raw_clusters:
            self.error(path, f"{source!r} is a cluster; requests come from a host")
        else:
            self.no_host(path, source)
        return False

    def _failover_cluster(self, path: Loc, to: object) -> str | None:
        """The cluster a scenario moves: `to`, or the only one. None when there is no usable one."""
        if to is None and len(self.raw_clusters) > 1:
            self.error(path, f"there are {len(self.raw_clusters)} clusters; say which one with "
                       f"to: ({', '.join(map(str, self.raw_clusters))})")
            return None
        if isinstance(to, str) and to not in self.raw_clusters:
            self.no_cluster(path + ("to",), to)
        name = str(next(iter(self.raw_clusters))) if to is None else to
        return str(name) if isinstance(name, str) and name in self.clusters else None

    def _failover_service(self, path: Loc, text: object, cluster: str | None) -> Service | None:
        if not isinstance(text, str):
            return None
        try:
            service = parse_service(text)
        except ValueError as e:
            self.error(path, str(e))
            return None
        if service.protocol not in ("tcp", "udp"):
            self.error(path, f"failover needs a tcp or udp service (got {service.name!r})")
            return None
        served = self.clusters[cluster].services if cluster else ()
        if cluster and (service.protocol, service.port) not in {(s.protocol, s.port)
                                                                 for s in served}:
            names = ", ".join(s.name for s in served) or "none"
            self.error(path, f"cluster {cluster!r} does not serve {service.name} (its services: "
                       f"{names}); add it to clusters.{cluster}.services")
            return None
        return service
