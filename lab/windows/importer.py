"""Read scripts: each line goes to the reader of its format; the rest is refused, line by line."""

from __future__ import annotations

from pathlib import Path

from lab.windows.consec import ConsecReader
from lab.windows.draft import Draft
from lab.windows.ipseccmd import IpseccmdReader
from lab.windows.netsh import NetshReader
from lab.windows.script import Refusal, commands, slug


def read_script(path: str, text: str, me: set[str] | None = None) -> Draft:
    """One script -> a Draft; every refusal is in draft.problems as `file:line: reason`."""
    draft = Draft(path)
    cmds, draft.problems = commands(path, text)
    netsh, ipseccmd = NetshReader(draft), IpseccmdReader(draft)
    # Connection security rules have no policy name: the file's name is the policy's.
    consec = ConsecReader(draft, slug(Path(path).name.split(".")[0]) or "consec", me or set())
    used = set()
    for cmd in cmds:
        words = list(cmd.words)
        head = [w.lower().removesuffix(".exe") for w in words[:3]]
        try:
            if head[:2] == ["netsh", "ipsec"]:
                netsh.feed(cmd, words[2:])
                used.add("netsh")
            elif head[:3] == ["netsh", "advfirewall", "consec"]:
                consec.feed(cmd, words[3:])
                used.add("consec")
            elif head[:2] == ["reg", "add"]:
                _registry(draft, words[2:])
            elif head[:1] in (["ipseccmd"], ["ipsecpol"]):
                ipseccmd.feed(cmd, words[1:])
                used.add("ipseccmd")
            else:
                raise Refusal(f"{' '.join(words[:3])}: not an IPsec command the importer reads "
                              "(netsh ipsec static, ipseccmd/ipsecpol, netsh advfirewall consec)")
        except Refusal as e:
            draft.refuse(cmd.where, str(e))
    netsh.finish()
    if "consec" in used and consec.policy_name in draft.policies:
        # Connection security rules are active once added: the policy is in force.
        draft.assigned.append((consec.policy_name, draft.policies[consec.policy_name].where))
    if used & {"netsh", "ipseccmd"}:
        draft.ike_version = 1  # Windows 2000/2003 negotiate IKEv1 (Main Mode) only
    if not cmds and not draft.problems:
        draft.problems.append(f"{path}:1: no IPsec command in this file")
    return draft


_IPSEC_KEY = "hklm\\system\\currentcontrolset\\services\\ipsec"


def _registry(draft: Draft, words: list[str]) -> None:
    """`reg add HKLM\\SYSTEM\\CurrentControlSet\\Services\\IPSEC /v NoDefaultExempt /t REG_DWORD
    /d N /f`: the default exemptions, as Windows 2000 and ipsecpol users set them."""
    args = {words[i].lower(): words[i + 1] for i in range(1, len(words) - 1) if
            words[i].startswith("/")}
    key = words[0].lower().replace("hkey_local_machine", "hklm") if words else ""
    if key != _IPSEC_KEY or args.get("/v", "").lower() != "nodefaultexempt":
        raise Refusal("reg add: only HKLM\\SYSTEM\\CurrentControlSet\\Services\\IPSEC "
                      "/v NoDefaultExempt is read")
    value = args.get("/d", "")
    if value not in ("0", "1", "2", "3"):
        raise Refusal(f"NoDefaultExempt /d {value}: expected 0, 1, 2 or 3")
    draft.exemptions = int(value)
