"""Windows IPsec policy scripts in and out of the topology format.

import: `netsh ipsec static` (Windows Server 2003), `ipseccmd`/`ipsecpol` and
`netsh advfirewall consec` scripts -> a Draft (lab.windows.draft) -> `policies:` of a topology
(lab.windows.mapper), validated by the topology loader itself.
export: a loaded topology's host policy -> the script for one format (lab.windows.writers).
What maps to what, and what is refused and why: docs/windows-import-export.md.
"""
