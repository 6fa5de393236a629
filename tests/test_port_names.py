"""charon prints a selector's port by the name the services database gives it (`tcp/ssh`,
`tcp/ms-sql-s`), not only the ones of the lab's own service list. A name the lab could not read
back made `covers` say no SA covers the flow, and an ESP flow to tcp/22 (strongSwan's
ikev2/protoport-trap, translated) was judged `unobserved` although 16 ESP packets of its SAs
were on the wire."""

import socket

import pytest

from lab.selectors import covers
from lab.verdicts.classify import covering_sas, flow_packets
from lab.verdicts.model import ChildSa
from lab.verdicts.wire import Packet


def _db_knows(name: str, proto: str = "tcp") -> bool:
    try:
        socket.getservbyname(name, proto)
        return True
    except OSError:
        return False


needs_db = pytest.mark.skipif(not _db_knows("ssh"), reason="no services database (netbase)")


@needs_db
@pytest.mark.parametrize("ts,proto,port,expected", [
    ("10.10.3.2/32[tcp/ssh]", "tcp", 22, True),
    ("10.10.3.2/32[tcp/ssh]", "tcp", 23, False),
    ("10.10.3.2/32[tcp/ms-sql-s]", "tcp", 1433, True),
    ("10.10.3.2/32[udp/snmp]", "udp", 161, True),
])
def test_covers_reads_any_port_name_charon_prints(ts, proto, port, expected):
    assert covers(ts, "10.10.3.2", proto, port) is expected


def test_an_unknown_port_name_covers_nothing_and_does_not_raise():
    assert covers("10.10.3.2/32[tcp/no-such-service-name]", "10.10.3.2", "tcp", 22) is False


def _child(host, local, remote, spi_in, spi_out):
    return ChildSa(host=host, ike="peer", peer="", child="ssh", state="INSTALLED", protocol="ESP",
                   mode="TRANSPORT", algorithms="AES_GCM_16-256", spi_in=spi_in, spi_out=spi_out,
                   bytes_in=0, bytes_out=0, packets_in=0, packets_out=0,
                   local_ts=(local,), remote_ts=(remote,))


@needs_db
def test_an_ssh_flow_finds_its_sas_and_its_esp_packets():
    probe = {"src": "moon", "dst": "sun", "src_address": "10.10.3.1", "dst_address": "10.10.3.2",
             "protocol": "tcp", "sport": 40000, "port": 22, "t_start": 10.0, "t_end": 11.0}
    rows = [_child("moon", "10.10.3.1/32[tcp]", "10.10.3.2/32[tcp/ssh]", "c87b1003", "c547cb72"),
            _child("sun", "10.10.3.2/32[tcp/ssh]", "10.10.3.1/32[tcp]", "c547cb72", "c87b1003")]
    sas = covering_sas(rows, probe)
    assert [r.host for r in sas] == ["moon", "sun"]
    esp = Packet(network="lan", time=10.5, src="10.10.3.1", dst="10.10.3.2", kind="esp", protocol=50,
                 sport=None, dport=None, spi="c547cb72", inner_esp=False, raw=b"")
    assert flow_packets([esp], probe, sas) == [esp]
