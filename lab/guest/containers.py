"""The Docker provider, inside the lab kernel: every lab host is a container running its charon.

Runs where the executor runs (the UML guest on these machines). The shape of the lab does not
change: each container is started with `network_mode="none"`, its network namespace is given
the plan's name with `ip netns attach`, and netns.create then builds veths, addresses, routes
and the bridges of the switch namespace exactly as for plain namespaces. Listeners, probes,
captures and XFRM reads keep working by namespace name. What differs is who runs charon: the
image's own /usr/lib/ipsec/charon, as the container's process, reading the strongswan.conf
that lab.guest.charon writes into a per-host folder on guest tmpfs. That folder is bind-mounted
into the container at the same path, so the VICI socket and the log are where the executor's
Charon class expects them.

dockerd is private to the run: its data-root, exec-root, pid file and socket live under
WORKDIR/docker on guest tmpfs (the UML init starts it early so it boots while Python starts;
on a host kernel the executor starts it). Every container carries the label lab.run=<run_id>;
teardown removes exactly those, then stops dockerd.

Client choice, measured in the UML guest (7.2 kernel, one CPU): `import docker` costs 0.27 s over
a bare interpreter, a `docker` CLI call 0.15 s, an SDK call a few milliseconds. One bring-up
needs ~4 calls per host plus import and teardown, so the SDK (imported only by this provider)
is cheaper than the CLI from the second host on.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time

from lab.guest import charon

LABEL = "lab.run"
GATE = "start-charon"  # a FIFO in the host's folder: charon starts once its network is ready
DOCKERD_WAIT = 60.0


def docker_dir(workdir: str) -> str:
    return os.path.join(workdir, "docker")


def servers_dir(workdir: str, host: str) -> str:
    """Where lab.guest.servers puts a host's real servers; bind-mounted into its container."""
    return os.path.join(workdir, "servers", host)


def socket_path(workdir: str) -> str:
    return os.path.join(docker_dir(workdir), "docker.sock")


def dockerd_argv(workdir: str) -> list[str]:
    d = docker_dir(workdir)
    # No iptables, no bridge, no NAT: the lab builds its own networks, and dockerd must not
    # touch the kernel's forwarding or filters. Everything it writes stays under `d`.
    return ["dockerd", "--data-root", f"{d}/data", "--exec-root", f"{d}/exec", "--pidfile", f"{d}/dockerd.pid",
            "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false", "--bridge=none",
            "--userland-proxy=false", "--log-level=warn", "-H", f"unix://{d}/docker.sock", *runtime_args()]


def runtime_args() -> list[str]:
    """crun as the OCI runtime where it is installed (make setup installs it), else dockerd's runc.

    Measured in the UML guest (load 5-6): a container start 2.8-4.5 s with crun against
    4.9 s with runc, a `docker exec` 1.8 s against 4.6 s. runc is Go and runs itself three
    times per start (create, init, start); crun is one small C program, and a process start
    is what the guest pays most for.
    """
    crun = shutil.which("crun")
    return ["--add-runtime", f"crun={crun}", "--default-runtime", "crun"] if crun else []


def runtime_name() -> str:
    return "crun" if shutil.which("crun") else "runc"


def server_version(header: str) -> str | None:
    """dockerd's version from its `Server` header: `Docker/20.10.24+dfsg1 (linux)` -> 20.10.24+dfsg1."""
    word = header.split()[0] if header.split() else ""
    return word.partition("/")[2] or None


SEED_DEVICE = "/dev/ubda"  # the copy-on-write view of the seeded data-root, when there is one


def init_snippet(workdir: str, seeded: bool = False) -> str:
    """Shell lines for the UML init: the cgroup v2 hierarchy, overlayfs, dockerd in the background.

    cgroup v2 is one mount (v1 was a tmpfs, seven mkdir and seven mounts: 0.5 s of process starts
    in the guest), and crun makes one cgroup per container instead of one per hierarchy.

    /etc/docker gets a tmpfs because dockerd 20.10 writes its key.json there, which on the
    guest's hostfs root would land on the host. With `seeded`, dockerd's data-root is the
    guest's first block device: a private copy-on-write view of a disk image into which the
    lab imported the image once (lab.images.seeded_disk), so no run pays for `docker import`.
    """
    d = docker_dir(workdir)
    argv = " ".join(dockerd_argv(workdir))
    mount_seed = f"mkdir -p {d}/data && mount -t ext4 {SEED_DEVICE} {d}/data\n" if seeded else ""
    return f"""# Docker provider: a private dockerd for this run, everything on guest tmpfs.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /etc/docker
modprobe -d /run/lab-modules overlay 2>/dev/null
mkdir -p {d}/containerd
{mount_seed}printf '%s\\n' {" ".join(shlex.quote(line) for line in containerd_config(workdir).splitlines())} > {d}/containerd.toml
# containerd first, dockerd once its socket is there (see containerd_config).
( containerd --config {d}/containerd.toml > {d}/containerd.log 2>&1 &
  echo $! > {d}/containerd.pid
  while [ ! -S {d}/containerd.sock ]; do sleep 0.2; done
  exec {argv} --containerd {d}/containerd.sock > {d}/dockerd.log 2>&1 ) &
"""


def containerd_config(workdir: str) -> str:
    """containerd for the guest's dockerd, started by the init rather than by dockerd.

    dockerd dials the containerd it starts before that one listens; in the guest the dial fails,
    gRPC backs off, and once in 15 runs dockerd killed its containerd and started another (1-2 s
    lost). Started first, dockerd finds it listening. The plugins dockerd never uses (CRI, the
    btrfs, zfs, devmapper and aufs snapshotters) are not loaded. Its state is on guest tmpfs.
    """
    d = docker_dir(workdir)
    return f"""version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/containerd.sock"
[debug]
  level = "warn"
"""


class Engine:
    """The run's dockerd: adopt the one the guest init started, or start one here."""

    def __init__(self, workdir: str, run_id: str):
        self.workdir, self.run_id = workdir, run_id
        self.dir = docker_dir(workdir)
        self.pidfile = os.path.join(self.dir, "dockerd.pid")
        self.log_path = os.path.join(self.dir, "dockerd.log")
        self.proc: subprocess.Popen | None = None
        self.client = None
        self.containers: dict[str, object] = {}
        # True when the lab kernel's init started dockerd (UML guest): its data-root is a
        # copy-on-write view or tmpfs that is thrown away with the guest.
        self.throwaway = os.path.exists(self.dir)

    def start(self) -> None:
        if not os.path.exists(self.dir):  # no init started it (host kernel): start it now
            os.makedirs(self.dir)
            with open(self.log_path, "w") as log:
                self.proc = subprocess.Popen(dockerd_argv(self.workdir), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT)

    def connect(self) -> str:
        """Wait until dockerd answers; returns its version, from the answer's `Server` header
        (`Docker/20.10.24+dfsg1 (linux)`): a `version` call cost 0.4 s in the guest, `info` 0.5-0.6 s
        (it runs the runtime and docker-init to ask theirs)."""
        import docker  # 0.27 s in the guest; only the Docker provider pays it

        deadline = time.monotonic() + DOCKERD_WAIT
        sock = socket_path(self.workdir)
        while True:
            if os.path.exists(sock):
                try:
                    self.client = docker.DockerClient(base_url=f"unix://{sock}", timeout=60)
                    res = self.client.api._get(self.client.api._url("/_ping"))
                    res.raise_for_status()
                    return server_version(res.headers.get("Server", ""))
                except (OSError, docker.errors.DockerException):
                    self.client = None  # socket there, API not yet: keep waiting
            if self.proc and self.proc.poll() is not None or time.monotonic() > deadline:
                tail = _tail(self.log_path)
                raise RuntimeError(f"dockerd did not answer on {sock}: {tail}")
            time.sleep(0.05)

    def ensure_image(self, image: dict) -> str:
        """Every image of the plan by its content tag: present already (the seeded data-root),
        or imported from its tarball."""
        import docker

        tarballs = image.get("tarballs") or {image["tag"]: image["tarball"]}
        how = "present"
        for tag, tarball in sorted(tarballs.items()):
            try:
                self.client.images.get(tag)
                continue
            except docker.errors.ImageNotFound:
                pass
            # The CLI streams the tarball from Go: 4.4 s for 93 MB in the guest, where the SDK's
            # import_image_from_file (the file through requests) took 14.3 s.
            res = subprocess.run(["docker", "-H", f"unix://{socket_path(self.workdir)}", "import",
                                  tarball, tag], capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"docker import {tarball} failed: {res.stderr.strip()}")
            self.client.images.get(tag)
            how = "imported"
        return how

    def run_host(self, plan: dict, host: dict, image: str) -> int:
        """Start one host's container with no network; returns its PID for `ip netns attach`."""
        folder = os.path.join(self.workdir, host["name"])
        os.makedirs(folder, exist_ok=True)
        if host["charon"] is not None:
            gate = os.path.join(folder, GATE)
            if not os.path.exists(gate):
                os.mkfifo(gate)
            conf = os.path.join(folder, "strongswan.conf")
            # Blocks on the FIFO until the executor has built the network, then becomes charon.
            command = ["/bin/sh", "-c", f"read _ < {gate}; exec {charon.CHARON}"]
            env = {"STRONGSWAN_CONF": conf}
        else:
            command, env = ["sleep", "infinity"], {}
        volumes = {folder: {"bind": folder, "mode": "rw"}}
        if host.get("servers"):  # the real servers' configuration, logs and data (lab.guest.servers)
            served = servers_dir(self.workdir, host["name"])
            os.makedirs(served, exist_ok=True)
            volumes[served] = {"bind": served, "mode": "rw"}
        c = self.client.containers.run(
            image, command, name=f"lab-{self.run_id}-{host['name']}", hostname=host["name"], detach=True,
            # A network namespace of its own with only `lo`, which the lab then wires. Not
            # network_mode="none": for that dockerd adds a prestart hook that runs the dockerd
            # binary itself (libnetwork-setkey) in every start, 10-14 s of a 13-18 s start in
            # the guest; `network_disabled` has no hook (measured: 4.9 s, runc).
            network_disabled=True, cap_add=["NET_ADMIN"], environment=env,
            labels={LABEL: self.run_id, "lab.host": host["name"], "lab.role": host.get("role") or ""},
            volumes=volumes, **lean_options(host),
        )
        self.containers[host["name"]] = c
        c.reload()
        pid = int(c.attrs["State"]["Pid"])
        if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            # Every host must be a network of its own: never wire hosts into the lab kernel's.
            raise RuntimeError(f"container of {host['name']} shares the lab kernel's network namespace")
        return pid

    def pids_of_daemons(self) -> list[int]:
        """dockerd and containerd, as their pid files name them."""
        files = [self.pidfile, os.path.join(self.dir, "containerd.pid")]
        return [p for p in map(_read_pid, files) if p]

    def remove_all(self) -> list[str]:
        """Every container, network and volume labelled with this run, and nothing else."""
        import docker

        removed = []
        if self.client is None:
            return removed
        flt = {"label": f"{LABEL}={self.run_id}"}
        def remove(c) -> None:
            try:
                c.remove(force=True, v=True)
                removed.append(c.name)
            except (OSError, docker.errors.DockerException) as exc:
                removed.append(f"error: {c.name}: {exc}")

        try:
            # All at once, as they were started: each removal mostly waits on runc and dockerd.
            threads = [threading.Thread(target=remove, args=(c,))
                       for c in self.client.containers.list(all=True, filters=flt)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            self.client.networks.prune(filters=flt)
            self.client.volumes.prune(filters=flt)
        except (OSError, docker.errors.DockerException) as exc:
            removed.append(f"error: {exc}")
        return removed

    def kill_all(self, pids: dict[str, int], grace: float = 10.0) -> list[str]:
        """Where the data-root is thrown away with the guest: SIGKILL to each container's init
        (the kernel ends every process of the container), then wait until each is gone.

        Asking dockerd to remove them cost 5.4 s for the default design in the guest (a shim
        call, a runtime process and an overlay unmount each), for state that the guest's power-off
        discards anyway. Returns the containers whose processes are gone, as remove_all does."""
        # dockerd, containerd and each container's shim first: alive, they would each handle the
        # exits (a runtime `delete` process per container) while the teardown goes on.
        shims = {_parent(pid) for pid in pids.values()} - {None, 0, 1, os.getpid()}
        for pid in [*self.pids_of_daemons(), *sorted(shims), *pids.values()]:
            _signal(pid, signal.SIGKILL)
        deadline, out = time.monotonic() + grace, []
        for host, pid in sorted(pids.items()):
            while _alive(pid, None) and time.monotonic() < deadline:
                time.sleep(0.02)
            name = self.containers[host].name if host in self.containers else host
            out.append(f"error: {name} still running" if _alive(pid, None) else name)
        return out

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM dockerd (it stops its containerd), SIGKILL after `grace`."""
        if self.client is not None:
            self.client.close()
        pid = self.proc.pid if self.proc else _read_pid(self.pidfile)
        if not pid:
            return
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid, self.proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid, self.proc):
            _signal(pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait()


def lean_options(host: dict) -> dict:
    """What a lab host's container does without: each costs the guest's one CPU in every start
    (measured in the guest: 5 starts 5.3-6.0 s without them against 5.5-8.5 s with them).

    - No docker-init where neither charon nor a real server runs: `sleep` is the container's
      PID 1, and the SIGKILL of the teardown ends it. charon keeps docker-init: as a PID 1 it
      ignored the teardown's SIGTERM (measured: each charon then waited out its 3 s grace), and
      real servers keep it to reap their children.
    - No seccomp profile: crun compiles docker's default filter (about 300 rules) for each start;
      the lab's hosts are the lab's own programs, and NET_ADMIN already lets them reach the kernel.
    - No log driver: nothing reads the containers' stdout (charon logs to a file), so dockerd
      keeps no copier and no log file for it.
    """
    return {"init": host.get("charon") is not None or bool(host.get("servers")), "security_opt": ["seccomp=unconfined"],
            "log_config": {"type": "none"}}


class ContainerProcess:
    """What lab.guest.charon.Charon needs of its daemon process, for a charon in a container.

    `pid` is the container's init as this kernel sees it: signals go straight to it. SIGKILL
    makes the kernel kill every process of the container's PID namespace at once, as a machine
    losing power; through dockerd, containerd and runc the same kill took 2-2.5 s under load,
    all of it counted in a crash's outage (node-crash: 8.4 s of 10 allowed, 6.2 s with namespaces).
    SIGTERM (teardown) reaches docker-init, which forwards it to charon, as `docker kill` would,
    without a runtime process per container.
    """

    def __init__(self, container, pid: int | None = None):
        self.container = container
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """None while the container's init lives. By its PID where known: asking dockerd meant
        waiting until dockerd, containerd and the shim had handled the exit (a runtime `delete`
        process each), all of it inside the teardown's wait for charon."""
        if self.returncode is None:
            if self.pid:
                if not _alive(self.pid, None):
                    self.returncode = self._exit_code()
            else:
                self.returncode = self._exit_code(running_is_none=True)
        return self.returncode

    def _exit_code(self, running_is_none: bool = False) -> int | None:
        """The container's exit code as dockerd has it; -1 where dockerd has not seen the exit yet."""
        import docker

        try:
            self.container.reload()
            state = self.container.attrs["State"]
            if state["Running"]:
                return None if running_is_none else -1
            return int(state["ExitCode"])
        except (OSError, docker.errors.DockerException):
            return -1  # gone

    def send_signal(self, sig: int) -> None:
        import docker

        if self.pid:  # straight to the container's init, which forwards it to charon (as dockerd's kill does)
            _signal(self.pid, int(sig))
            return
        try:
            self.container.kill(signal=int(sig))
        except (OSError, docker.errors.DockerException):
            self.returncode = self.returncode if self.returncode is not None else -1  # already stopped

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if self.pid:
            deadline = None if timeout is None else time.monotonic() + timeout
            while _alive(self.pid, None):
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired("container", timeout)
                time.sleep(0.02)
            self.returncode = self.returncode if self.returncode is not None else -1  # dockerd not asked
            return self.returncode
        import requests

        try:
            res = self.container.wait(timeout=timeout)
        except requests.exceptions.RequestException:
            raise subprocess.TimeoutExpired("container", timeout) from None
        self.returncode = int(res.get("StatusCode", -1))
        return self.returncode


class ContainerCharon(charon.Charon):
    """lab.guest.charon.Charon with the daemon in a container; VICI, events and logs unchanged."""

    def __init__(self, host: str, ns: str, workdir: str, container, pid: int | None = None):
        super().__init__(host, ns, workdir)
        self.container, self.pid = container, pid

    def _spawn(self, conf: str) -> ContainerProcess:
        """Charon.start writes the configuration; here the container's charon is released."""
        proc = ContainerProcess(self.container, self.pid)
        # Opening the FIFO for writing releases the container's `read`; closing gives it EOF.
        # Non-blocking: ENXIO means the container's shell has not opened it yet.
        gate, deadline = os.path.join(self.dir, GATE), time.monotonic() + 30
        while True:
            try:
                os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
                return proc
            except OSError as exc:
                if exc.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"container of {self.host} never waited for its network: {exc}") from None
                time.sleep(0.02)


class DockerHosts:
    """What the executor calls for `provider: docker`: build, hand out charons, check, destroy."""

    def __init__(self, plan: dict, workdir: str):
        self.plan, self.workdir = plan, workdir
        self.engine = Engine(workdir, plan.run_id)
        self.info: dict = {"image": plan.image["tag"], "images": plan.image.get("hosts", {})}
        self.pids: dict[str, int] = {}
        self.engine.start()

    def create(self, progress) -> None:
        from lab.guest import netns

        t = time.monotonic()
        self.info["dockerd_version"] = self.engine.connect()
        self.info["dockerd_ready_s"] = round(time.monotonic() - t, 3)
        self.info["runtime"] = runtime_name()  # what dockerd_argv made the default
        t = time.monotonic()
        how = self.engine.ensure_image(self.plan.image)
        self.info["image_" + how + "_s"] = round(time.monotonic() - t, 3)
        progress("bring-up", f"dockerd {self.info['dockerd_version']} ready; image {self.info['image']} {how}")
        t = time.monotonic()
        pids, each, failed = {}, {}, []

        def start(h):
            t1 = time.monotonic()
            try:
                tag = self.plan.image.get("hosts", {}).get(h["name"], self.plan.image["tag"])
                pids[h["ns"]] = self.engine.run_host(self.plan, h, tag)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after every thread ended
                failed.append(f"{h['name']}: {exc}")
            each[h["name"]] = round(time.monotonic() - t1, 3)
        # All at once: dockerd and runc spend much of a start waiting, so the starts overlap.
        threads = [threading.Thread(target=start, args=(h,)) for h in self.plan.hosts]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.info["container_start_s"] = each
        if failed:
            raise RuntimeError("containers did not start: " + "; ".join(failed))
        self.info["containers_s"] = round(time.monotonic() - t, 3)
        self.pids = {h["name"]: pids[h["ns"]] for h in self.plan.hosts if h["ns"] in pids}
        progress("bring-up", f"{len(pids)} containers started ({self.info['containers_s']} s)")
        netns.create(self.plan, attach=pids)

    def enter(self, host: str) -> list[str]:
        """The prefix that runs a real server inside `host`'s container: its files, binaries and
        users are the role image's, and `ps` in the container shows it (mount, UTS, IPC and PID
        namespaces; the network namespace is the same one). nsenter forks the daemon into the
        container's PID namespace; both stay in the process group lab.guest.servers stops."""
        return ["nsenter", "-t", str(self.pids[host]), "-m", "-u", "-i", "-p", "-r", "-w", "--"]

    def charon(self, host: dict) -> ContainerCharon:
        return ContainerCharon(host["name"], host["ns"], self.workdir, self.engine.containers[host["name"]],
                               self.pids.get(host["name"]))

    def checks(self, xfrm: dict | None = None) -> dict:
        t = time.monotonic()
        out = host_checks(self.workdir, self.engine, self.plan.hosts, self.pids, xfrm)
        self.info["host_checks_s"] = round(time.monotonic() - t, 3)
        return out

    def destroy(self, logs: str) -> None:
        t = time.monotonic()
        if self.engine.throwaway:
            self.info["removed"] = self.engine.kill_all(self.pids)
            self.info["removal"] = "killed; the data-root is discarded with the guest"
        else:
            self.info["removed"] = self.engine.remove_all()
            self.info["removal"] = "docker rm"
        self.info["remove_s"] = round(time.monotonic() - t, 3)
        # In the guest dockerd's orderly stop only tidies state the power-off discards (4.3 s
        # with the killed containers): SIGKILL; containerd and its shims die with the guest.
        self.engine.stop(grace=0.0 if self.engine.throwaway else 10.0)
        self.info["teardown_s"] = round(time.monotonic() - t, 3)
        if os.path.exists(self.engine.log_path):
            os.makedirs(logs, exist_ok=True)
            with open(self.engine.log_path, "rb") as src, open(os.path.join(logs, "dockerd.log"), "wb") as dst:
                dst.write(src.read())


def ike_bound(udp: str) -> bool:
    """A /proc/net/udp listing (a namespace's own) has a socket bound to port 500 (01F4), state 07."""
    rows = (line.split() for line in udp.splitlines()[1:])
    return any(len(r) > 3 and r[1].endswith(":01F4") and r[3] == "07" for r in rows)


def processes_in(pid: int, proc: str = "/proc") -> list[str]:
    """The command names of every process in the PID namespace whose init is `pid`: what `ps -e`
    run inside the container lists (real servers entered with nsenter included)."""
    ns = os.readlink(f"{proc}/{pid}/ns/pid")
    names = set()
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"{proc}/{entry}/ns/pid") == ns:
                with open(f"{proc}/{entry}/comm") as f:
                    names.add(f.read().strip())
        except OSError:  # ended meanwhile, or a kernel thread's link we may not read
            continue
    return sorted(names)


def read_host(pid: int, sock: str, proc: str = "/proc") -> dict:
    """One container's state from this kernel's /proc: its processes (PID namespace), charon's
    VICI socket (the bind-mounted folder, same path inside), UDP 500 bound in its network
    namespace (/proc/PID/net/udp is the namespace of that process)."""
    names = processes_in(pid, proc)
    with open(f"{proc}/{pid}/net/udp") as f:
        udp = f.read()
    try:
        vici = stat.S_ISSOCK(os.stat(sock).st_mode)
    except FileNotFoundError:
        vici = False
    return {"charon_running": "charon" in names, "vici_socket": vici, "ike_listening": ike_bound(udp),
            "processes": names}


def count_states(listing: dict | None) -> int:
    """XFRM SAs in the state listing the executor read from the container's network namespace."""
    text = (listing or {}).get("state") or ""
    return sum(1 for line in text.splitlines() if line.startswith("src "))


def host_checks(workdir: str, engine: Engine, hosts: list[dict], pids: dict[str, int], xfrm: dict | None) -> dict:
    """Host state of each IPsec container and of each container with real servers, and
    dockerd's view of it.

    The containers live in the guest and are gone before the host's pytest runs, so the
    conformance suite reads these results from results.json. Each container is read from this
    kernel's /proc, which sees every namespace: no process is started. A script through
    `nsenter` (before that `docker exec`, testinfra's docker backend) read the same kernel state
    with ten processes per host, 1.1 s for the default design in the guest and 2.7 s under load.
    dockerd's state of each container is one API call.
    """
    out: dict[str, dict] = {}
    for h in hosts:
        if (h["charon"] is None and not h.get("servers")) or h["name"] not in engine.containers:
            continue
        name = h["name"]
        r = out[name] = {"container": engine.containers[name].name}
        try:
            r.update(read_host(pids[name], os.path.join(workdir, name, "charon.vici")))
            r["xfrm_states"] = count_states((xfrm or {}).get(name))
        except (OSError, KeyError) as exc:  # recorded: a failed check is evidence, not a crash
            r["error"] = f"{type(exc).__name__}: {exc}"
        try:
            c = engine.containers[name]
            c.reload()
            r["docker_status"] = c.status  # "running": dockerd agrees the container is up
        except Exception as exc:  # noqa: BLE001 - recorded, as above
            r.setdefault("error", f"{type(exc).__name__}: {exc}")
    return out


def _tail(path: str, n: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-n:])
    except OSError:
        return "(no log)"


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int, proc: subprocess.Popen | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of init still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

