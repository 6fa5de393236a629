"""Container images for the Docker provider, built offline from Debian packages (host side).

No container registry is reachable from the lab's machines, so the image is a root file system
made by debootstrap (minbase plus strongSwan and the tools the lab and testinfra need) and kept
as a tarball under /var/lib/ipsec-lab/images/. The guest's dockerd imports it (`docker import`).
The tag derives from the content: a hash of the suite, the package list and the build script,
so the same inputs give the same tag and a changed input gives a new image. Users who do have a
registry build the same thing from docker/Dockerfile.

Each image is two files: `<tag-hash>.tar` (the root file system) and `<tag-hash>.json` (what
it holds, its size and how long it took to build). A build writes into a temporary folder beside
them and renames at the end, so a killed build never leaves a half image under a valid name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab import programs
from lab.errors import LabError, MissingTool
from lab.guest.containers import docker_dir, init_snippet
from lab.kernels.base import new_run_dir
from lab.kernels.uml import GUEST_WORKDIR, POWER_OFF, UmlGuest

IMAGES_DIR = Path(os.environ.get("LAB_IMAGES_DIR", "/var/lib/ipsec-lab/images"))
REPOSITORY = "ipsec-lab/strongswan"
SUITE = "bookworm"
# strongswan-charon: the daemon; its VICI plugin ships in strongswan-swanctl; the plugins the lab loads (openssl, kernel-netlink, vici, ...)
# live in libstrongswan-standard-plugins and libcharon-extra-plugins; iproute2 for `ip xfrm`
# inside the container; procps for `ps` when a user enters a container (`docker exec`).
PACKAGES = (
    "strongswan-charon",
    "strongswan-swanctl",  # holds charon's vici plugin (and swanctl, handy inside a container)
    "libstrongswan-standard-plugins",
    "libcharon-extra-plugins",
    "iproute2",
    "procps",
    "netbase",  # /etc/protocols and /etc/services: charon resolves `tcp` and `http` in selectors
)

# Runs inside the fresh root file system after debootstrap, as `chroot ROOTFS sh -c SCRIPT`.
# Part of the tag: change it and the image is rebuilt.
TRIM_SCRIPT = """set -e
rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
  /usr/share/info/* /usr/share/locale/* /var/log/*.log /var/cache/debconf/*-old
mkdir -p /vici
# charon's own defaults would load ~70 plugins; the lab gives it a strongswan.conf of its own.
"""


# Real servers (lab.services) run inside their host's container: a host whose topology gives it
# real daemons gets an image of its own with strongSwan plus exactly those daemons' packages
# (the packages a front-end, a back-end or a domain controller needs); every other host,
# the firewall included, gets the strongSwan image.
SERVER_PACKAGES = {
    "nginx": ("nginx-light",),
    "dovecot": ("dovecot-imapd", "dovecot-pop3d"),
    "krb5kdc": ("krb5-kdc",),
    "slapd": ("slapd",),
}


# The role images the shipped topologies use (`lab image build` makes them all): a front-end
# or edge serves HTTP(S), a back-end HTTP and mail, a domain controller Kerberos and LDAP.
ROLE_IMAGES = {"front-end": ("nginx",), "back-end": ("dovecot", "nginx"), "domain-controller": ("krb5kdc", "slapd")}


def current_ids() -> set[str]:
    """The ids of the strongSwan image and of every role image, as the code builds them now."""
    return {image_id(packages_for(d)) for d in [(), *ROLE_IMAGES.values()]}


def packages_for(daemons=()) -> tuple[str, ...]:
    """The image's packages: strongSwan's, plus those of the real daemons the host runs."""
    unknown = set(daemons) - set(SERVER_PACKAGES)
    if unknown:
        raise LabError(f"no image package known for daemon(s) {', '.join(sorted(unknown))}")
    return PACKAGES + tuple(p for d in sorted(set(daemons)) for p in SERVER_PACKAGES[d])


def repository(daemons=()) -> str:
    return REPOSITORY + "".join(f"-{d}" for d in sorted(set(daemons)))


def image_id(packages: tuple[str, ...] = PACKAGES, suite: str = SUITE, script: str = TRIM_SCRIPT) -> str:
    """Twelve hex digits of a hash over everything that decides the image's content."""
    h = hashlib.sha256()
    for part in (suite, "\n".join(sorted(packages)), script, "debootstrap --variant=minbase"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def tag(ident: str | None = None, daemons=()) -> str:
    return f"{repository(daemons)}:{ident or image_id(packages_for(daemons))}"


@dataclass(frozen=True)
class Image:
    ident: str
    tarball: Path
    meta: dict

    @property
    def tag(self) -> str:
        return self.meta.get("tag") or tag(self.ident)

    @property
    def size(self) -> int:
        return self.tarball.stat().st_size


def find(ident: str | None = None, directory: Path | None = None) -> Image | None:
    directory = directory or IMAGES_DIR
    ident = ident or image_id()
    tarball, meta = directory / f"{ident}.tar", directory / f"{ident}.json"
    if not (tarball.is_file() and meta.is_file()):
        return None
    return Image(ident, tarball, json.loads(meta.read_text()))


def list_images(directory: Path | None = None) -> list[Image]:
    directory = directory or IMAGES_DIR
    if not directory.is_dir():
        return []
    found = []
    for meta in sorted(directory.glob("*.json")):
        img = find(meta.stem, directory)
        if img:
            found.append(img)
    return found


def debian_mirror(sources: tuple[str, ...] = ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list")) -> str:
    """The Debian mirror this machine's apt already uses (LAB_DEBIAN_MIRROR overrides it)."""
    if os.environ.get("LAB_DEBIAN_MIRROR"):
        return os.environ["LAB_DEBIAN_MIRROR"]
    for path in sources:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            m = re.match(r"URIs:\s*(\S+)", line) or re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", line)
            if m and "security" not in m.group(1):
                return m.group(1)
    raise MissingTool("no Debian mirror found in /etc/apt/sources*: set LAB_DEBIAN_MIRROR")


def _say(on_progress, message: str) -> None:
    if on_progress:
        on_progress({"phase": "image", "message": message})


def build(on_progress=None, force: bool = False, directory: Path | None = None, daemons=()) -> Image:
    """debootstrap the image's root file system and pack it; returns the existing one if built.
    `daemons`: the real servers the image also holds (SERVER_PACKAGES), none for strongSwan's."""
    directory = directory or IMAGES_DIR
    packages = packages_for(daemons)
    ident = image_id(packages)
    name = tag(ident, daemons)
    if not force and (img := find(ident, directory)):
        return img
    _need("debootstrap")
    if os.geteuid() != 0:
        raise MissingTool("building the image needs root (debootstrap): run it with sudo")
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"build-{ident}-", dir=directory))
    try:
        rootfs = work / "rootfs"
        mirror = debian_mirror()
        _say(on_progress, f"building {name} with debootstrap ({SUITE}, minbase + {len(packages)} packages); "
                          "about a minute, once")
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(rootfs), mirror]
        _run(argv, on_progress, "debootstrap")
        _run(["chroot", str(rootfs), "/bin/sh", "-c", TRIM_SCRIPT], on_progress, "trim")
        _say(on_progress, "packing the root file system")
        tarball = work / "image.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "--sort=name", "-cf", str(tarball), "."],
             on_progress, "tar")
        versions = subprocess.run(
            ["chroot", str(rootfs), "dpkg-query", "-W", "-f=${Package} ${Version}\\n", *packages],
            capture_output=True, text=True, check=False).stdout.split("\n")
        meta = {
            "tag": name, "id": ident, "suite": SUITE, "packages": list(packages), "daemons": sorted(set(daemons)),
            "versions": [v for v in versions if v], "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - started, 1), "size": tarball.stat().st_size,
        }
        os.replace(tarball, directory / f"{ident}.tar")
        (directory / f"{ident}.json").write_text(json.dumps(meta, indent=1) + "\n")
        _say(on_progress, f"built {name}: {meta['size'] / 1e6:.0f} MB in {meta['build_seconds']} s")
        return find(ident, directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)


SEED_SIZE = "3G"  # sparse: only what dockerd writes takes room
SEED_BODY = """{docker}
sock=unix://{d}/docker.sock
for i in $(seq 1 600); do docker -H $sock info >/dev/null 2>&1 && break; sleep 0.1; done
rc=0
{imports}
kill $(cat {d}/dockerd.pid)
wait
sync
umount {d}/data || rc=1
echo $rc > {rcfile}
"""


def seed_path(imgs) -> Path:
    """One image: `<id>.dockerd.ext4` beside it; several: named by a hash of their ids."""
    imgs = [imgs] if isinstance(imgs, Image) else sorted(imgs, key=lambda i: i.ident)
    if len(imgs) == 1:
        return imgs[0].tarball.with_suffix(".dockerd.ext4")
    h = hashlib.sha256("\0".join(i.ident for i in imgs).encode()).hexdigest()[:12]
    return imgs[0].tarball.parent / f"seed-{h}.dockerd.ext4"


def seeded_disk(imgs, on_progress=None) -> Path:
    """A disk image holding a dockerd data-root into which `imgs` (one Image or several) are
    already imported.

    Built once per set of images (one guest boot, one `docker import` each); every docker run
    then mounts a private copy-on-write view of it (UML's ubd COW), so no run imports again.
    """
    imgs = [imgs] if isinstance(imgs, Image) else sorted(imgs, key=lambda i: i.ident)
    final = seed_path(imgs)
    if final.exists():
        return final

    _need("mkfs.ext4")
    _say(on_progress, f"seeding a docker data-root with {', '.join(i.tag for i in imgs)} (once)")
    started = time.monotonic()
    tmp = final.with_suffix(f".{os.getpid()}.tmp")  # concurrent seeders never share a file
    _run(["truncate", "-s", SEED_SIZE, str(tmp)], on_progress, "truncate")
    _run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(tmp)], on_progress, "mkfs.ext4")
    run_id, files = new_run_dir()
    try:
        guest = UmlGuest(run_id, files)
        guest.extra_args.append(f"ubd0={tmp}")
        imports = "\n".join(f"docker -H $sock import {i.tarball} {i.tag} >/dev/null || rc=1" for i in imgs)
        guest.body = SEED_BODY.format(docker=init_snippet(GUEST_WORKDIR, seeded=True), d=docker_dir(GUEST_WORKDIR),
                                      imports=imports, rcfile=f"{files.rundir}/guest.rc") + POWER_OFF
        if guest.run(lambda e: None) != 0:
            tail = Path(files.console).read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError("seeding the docker data-root failed: " + " | ".join(tail))
        os.replace(tmp, final)
    finally:
        shutil.rmtree(files.rundir, ignore_errors=True)
        tmp.unlink(missing_ok=True)
    _say(on_progress, f"seeded {final.name} in {time.monotonic() - started:.1f} s")
    return final


def _need(program: str) -> None:

    absent = [p for p in programs.missing({"docker"}) if p.name == program]
    if absent:
        raise MissingTool(programs.describe(absent))


def host_daemons(plan) -> dict[str, tuple[str, ...]]:
    """host -> the real daemons it runs (lab.services fills plan hosts' `servers`)."""
    return {h.name: tuple(sorted({d["name"] for d in h.servers["daemons"]}))
            for h in plan.hosts if h.servers}


def for_plan(plan, on_progress=None, seed: bool = True) -> dict:
    """The images a plan's containers need, built if missing: strongSwan's for every host, one
    with the host's daemons for each host that runs real servers. Returns the plan's `image`."""
    base = build(on_progress)
    per_host = {h: build(on_progress, daemons=d) for h, d in host_daemons(plan).items()}
    imgs = {i.tag: i for i in [base, *per_host.values()]}
    out = {"tag": base.tag, "tarball": str(base.tarball),
           "hosts": {h: i.tag for h, i in per_host.items()},
           "tarballs": {t: str(i.tarball) for t, i in imgs.items()}}
    if seed:  # one data-root with every role image serves every topology: seeded once, not per design
        roles = [build(on_progress, daemons=d) for d in ROLE_IMAGES.values()]
        out["seed"] = str(seeded_disk(list({i.tag: i for i in [*roles, *imgs.values()]}.values()), on_progress))
    return out


def _run(argv: list[str], on_progress, what: str) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        if what == "debootstrap" and line.startswith("I: ") and any(
                w in line for w in ("Retrieving Release", "Validating Packages", "Installing core",
                                    "Unpacking the base", "Configuring the base", "Base system installed")):
            _say(on_progress, line[3:].strip())
    if proc.wait() != 0:
        raise LabError(f"image build: {what} failed ({proc.returncode}): " + " | ".join(tail[-5:]))


def main(argv: list[str]) -> int:  # `python -m lab.images build|list`, for make images
    def show(e):
        print(e["message"], file=sys.stderr)
    if argv[:1] == ["build"]:
        img = build(show, force="--force" in argv)
        print(f"{img.tag}  {img.tarball}")
    else:
        for img in list_images():
            print(f"{img.tag}  {img.size / 1e6:.0f} MB  built {img.meta.get('built')}  {img.tarball}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
