"""The lab's runtime inside the lab kernel (standard library and vici only: the guest is slow)."""

# Prefix of the executor's progress lines on stdout; the host side (lab.providers) reads them.
PROGRESS = "@@lab "
