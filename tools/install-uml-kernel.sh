#!/usr/bin/env bash
# Make sure a User-Mode Linux kernel that boots on this CPU is available to the lab.
#
# Debian 12's user-mode-linux (6.1) and Debian 13's (6.12) give the host kernel an XSAVE buffer
# of a fixed size; on CPUs with AMX the host needs ~11 KiB and every guest process dies with
# "ptrace set fp regs failed, errno = 14". Kernels from 6.13 on size the buffer from the host.
# So: if the stock kernel boots, use it; otherwise take Debian unstable's user-mode-linux and
# the C library it was built against, unpack both into $LAB_UML_DIR (nothing is installed
# system-wide), and point the binary at that private loader with patchelf.
set -euo pipefail
DEST=${LAB_UML_DIR:-/var/lib/ipsec-lab/uml}
SUITE=${LAB_UML_SUITE:-sid}

boots() {  # boots KERNEL -> 0 if its first process runs
    local tmp out
    tmp=$(mktemp -d)
    out=$(cd "$tmp" && timeout 60 "$1" mem=64M rootfstype=hostfs rootflags=/ rw init=/bin/true \
          con=null con0=null,fd:1 umid=probe uml_dir="$tmp" 2>&1 || true)
    rm -rf "$tmp"
    # /bin/true exits at once, so the guest panics either way; the exit code tells how.
    grep -q 'Attempted to kill init! exitcode=0x00000000' <<<"$out"
}

if [ -x "$DEST/linux" ] && boots "$DEST/linux"; then
    echo "uml: $DEST/linux boots"; exit 0
fi
if [ -x /usr/bin/linux.uml ] && boots /usr/bin/linux.uml; then
    echo "uml: Debian's /usr/bin/linux.uml boots on this CPU"; exit 0
fi
echo "uml: /usr/bin/linux.uml cannot run on this CPU (XSAVE state too large); fetching user-mode-linux from Debian $SUITE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/x"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" > "$work/sources.list"
apt_opts=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- \
          -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o APT::Sandbox::User=root -q)
apt-get "${apt_opts[@]}" update >/dev/null
(cd "$work" && apt-get "${apt_opts[@]}" download user-mode-linux libc6 >/dev/null)
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/x"; done
version=$(ls "$work/x/usr/lib/uml/modules")
rm -rf "$DEST.new" && mkdir -p "$DEST.new/lib" "$DEST.new/modules"
cp -L "$work/x/usr/lib/x86_64-linux-gnu/libc.so.6" "$work/x/usr/lib64/ld-linux-x86-64.so.2" "$DEST.new/lib/"
cp -a "$work/x/usr/lib/uml/modules/$version" "$DEST.new/modules/"
cp "$work/x/usr/bin/linux.uml" "$DEST.new/linux"
patchelf --set-interpreter "$DEST/lib/ld-linux-x86-64.so.2" --set-rpath "$DEST/lib" "$DEST.new/linux"
rm -rf "$DEST" && mv "$DEST.new" "$DEST"
if boots "$DEST/linux"; then
    echo "uml: installed user-mode-linux $version into $DEST"
else
    echo "uml: user-mode-linux $version from Debian $SUITE does not boot here either" >&2; exit 1
fi
