"""The lab's runtime inside the lab kernel (standard library and vici only: the guest is slow)."""

from lab.contract import PROGRESS  # noqa: F401  (the guest modules' name for it)
