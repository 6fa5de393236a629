"""IKE's time to established per flow, read from the millisecond stamps of charon's log."""

from __future__ import annotations

import time

from lab.verdicts.ike import IkeOutcome, established_by_peer, to_epoch

LOG = """\
07:30:04.301 07[IKE] <rule-fe-be-http|1> initiating IKE_SA rule-fe-be-http[1] to 10.10.2.20
07:30:04.585 15[IKE] <rule-fe-be-http|1> IKE_SA rule-fe-be-http[1] established between 10.10.1.10[10.10.1.10]...10.10.2.20[10.10.2.20]
07:30:04.601 15[IKE] <rule-fe-be-http|1> CHILD_SA fe-be-http{2} established with SPIs ca01aedd_i cac459fe_o and TS 10.10.1.10/32[tcp] === 10.10.2.20/32[tcp/http]
07:30:05.100 09[IKE] <2> initiating IKE_SA rule-x[2] to 10.10.3.30
"""


def test_child_sa_up_times_by_peer_to_the_millisecond():
    assert established_by_peer(LOG) == {"10.10.2.20": [7 * 3600 + 30 * 60 + 4.601]}


def test_time_of_day_becomes_the_nearest_epoch_time():
    now = time.time()
    lt = time.localtime(now)
    sod = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + (now % 1)
    assert abs(to_epoch(sod + 0.25, now) - (now + 0.25)) < 1e-6
    assert abs(to_epoch((sod - 1) % 86400, now) - (now - 1)) < 1e-6  # also across midnight


def test_seconds_after_the_first_packet():
    o = IkeOutcome(True, (), (100.4, 103.0))
    assert o.seconds_after(100.1) == 0.3
    assert o.seconds_after(104.0) == 0.0  # up before this probe started
    assert IkeOutcome(False, ()).seconds_after(1.0) is None
