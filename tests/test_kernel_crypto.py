"""The boot-time crypto warm-up: every transform a plan can negotiate, once, in kernel names."""

from __future__ import annotations

from types import SimpleNamespace as NS

from lab.compile import kernel_crypto
from lab.compile.plan import build_plan
from lab.model.load import load_topology


def _plan(proposals: dict) -> NS:
    return NS(hosts=[{"charon": None}, {"charon": {"conns": {"c": {"children": {"x": proposals}}}}}])


def test_gcm_and_cbc_proposals_map_to_the_kernel_names_charon_installs():
    algs = kernel_crypto.algorithms(_plan({"esp_proposals": ["aes256gcm16", "aes256-sha256", "3des-sha1-modp1024"],
                                           "ah_proposals": ["sha1", "md5-modp768"]}))
    assert ("aead", "rfc4106(gcm(aes))", 36, 128) in algs
    assert ("enc", "cbc(aes)", 32, "hmac(sha256)", 32, 128) in algs
    assert ("enc", "cbc(des3_ede)", 24, "hmac(sha1)", 20, 96) in algs
    assert ("ah", "hmac(sha1)", 20, 96) in algs and ("ah", "hmac(md5)", 16, 96) in algs


def test_one_scratch_sa_per_kernel_instance_and_unknown_keywords_left_out():
    algs = kernel_crypto.algorithms(_plan({"esp_proposals": ["aes128gcm16", "aes256gcm16", "aes128-sha1",
                                                             "aes256-sha1", "blowfish-sha1"]}))
    assert len(algs) == 2  # key sizes make no new instance; blowfish is not in the table


def test_batch_adds_then_flushes_in_the_guests_own_namespace():
    lines = kernel_crypto.warmup_batch(_plan({"esp_proposals": ["aes256gcm16"]}))
    assert lines[0].startswith("xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp")
    assert "aead 'rfc4106(gcm(aes))' 0x" in lines[0] and lines[-1] == "xfrm state flush"
    assert kernel_crypto.warmup_batch(NS(hosts=[{"charon": None}])) == []


def test_every_shipped_design_warms_up_the_default_and_windows_methods():
    plan = build_plan(load_topology("topologies/exchange-fe-be-http.yaml"), "t", "/tmp/x")
    names = {a[1] for a in kernel_crypto.algorithms(plan)}
    assert {"rfc4106(gcm(aes))", "cbc(aes)", "cbc(des3_ede)", "hmac(sha1)"} <= names
