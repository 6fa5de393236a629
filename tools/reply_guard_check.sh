#!/bin/sh
# The IKEv1 responder's install window, by hand, in a User-Mode Linux guest (docs/semantics.md,
# "The IKEv1 responder's install window"): namespace a is the initiator (SAs and policies), b
# the responder between charon's SA install and its policy install (SAs, no policies). Shows
# that b answers a's ESP request in clear without the reply guard, holds that reply back with
# it, leaves a clear flow alone, and lets the reply go in ESP once b's policies are in.
# Usage: tools/reply_guard_check.sh   (exit 0 when every line is as described)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "$$" != 1 ]; then  # on the host: boot a guest with this script as its init
    dir=$(mktemp -d /var/tmp/reply-guard-check.XXXXXX)  # UML's pid file and socket, removed after
    # The lab's own guard (modules on the first line, then the rules), read here: the guest's
    # tmpfs on /tmp hides a checkout under /tmp, while /var/tmp stays visible.
    (cd "$ROOT" && python3 -S -c 'from lab.compile.reply_guard import MODULES, RULES; print(MODULES); print("\n".join(RULES))') \
        > "$dir/guard" || { rm -rf "$dir"; echo "@@ could not read lab.compile.reply_guard"; exit 1; }
    cp "$0" "$dir/init"  # the kernel's command line splits at spaces: a checkout may have them
    out=$(timeout 120 linux.uml mem=256M rootfstype=hostfs rootflags=/ rw init="$dir/init" \
          GUARD_FILE="$dir/guard" con=null con0=null,fd:1 umid=reply-guard-check uml_dir="$dir" 2>&1 | tr -d '\r' | grep -a '^@@')
    rm -rf "$dir"
    echo "$out"
    echo "$out" | grep -q '^@@ ok$'
    exit $?
fi
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /run
mkdir -p /run/netns /run/m/lib/modules; ln -s /usr/lib/uml/modules/$(uname -r) /run/m/lib/modules/$(uname -r)
printf '#!/bin/sh\nexec /sbin/modprobe -d /run/m "$@"\n' > /run/mp; chmod 755 /run/mp; echo /run/mp > /proc/sys/kernel/modprobe
GUARD_MODULES=$(head -n 1 "$GUARD_FILE")  # written by the host part above (GUARD_FILE: init's environment)
modprobe -a -d /run/m esp4 xfrm_user veth $GUARD_MODULES
tail -n +2 "$GUARD_FILE" > /run/guard
for n in a b c; do ip netns add $n; ip -n $n link set lo up; done
ip link add va netns a type veth peer name vb netns b
ip link add vc netns c type veth peer name vb2 netns b
ip -n a addr add 10.9.0.1/24 dev va; ip -n b addr add 10.9.0.2/24 dev vb
ip -n c addr add 10.9.1.3/24 dev vc; ip -n b addr add 10.9.1.2/24 dev vb2
for l in a:va b:vb c:vc b:vb2; do ip -n ${l%:*} link set ${l#*:} up; done
K1=0x0123456789abcdef0123456789abcdef; K2=0xfedcba9876543210fedcba9876543210
A1=0x1111111111111111111111111111111111111111; A2=0x2222222222222222222222222222222222222222
for n in a b; do
  ip -n $n xfrm state add src 10.9.0.1 dst 10.9.0.2 proto esp spi 0x100 reqid 1 mode transport enc 'cbc(aes)' $K1 auth 'hmac(sha1)' $A1
  ip -n $n xfrm state add src 10.9.0.2 dst 10.9.0.1 proto esp spi 0x200 reqid 1 mode transport enc 'cbc(aes)' $K2 auth 'hmac(sha1)' $A2
done
policies() {  # $1 = namespace, $2 = its address, $3 = the peer's
  ip -n $1 xfrm policy add src $2 dst $3 dir out tmpl src $2 dst $3 proto esp reqid 1 mode transport
  ip -n $1 xfrm policy add src $3 dst $2 dir in tmpl src $3 dst $2 proto esp reqid 1 mode transport
}
policies a 10.9.0.1 10.9.0.2
ping_from() { ip netns exec $1 ping -c1 -W1 $2 >/dev/null 2>&1 && echo answered || echo unanswered; }
refused() { ip netns exec a awk '$1=="XfrmInTmplMismatch"{print $2}' /proc/net/xfrm_stat; }
held() { ip netns exec b iptables-legacy -L lab-held-reply -v -x -n 2>/dev/null | awk 'NR==3{print $1}'; }
r0=$(refused); p1=$(ping_from a 10.9.0.2); r1=$(refused)
echo "@@ window, no guard: ping $p1; clear replies a refused: $((r1 - r0))"
ip netns exec b iptables-legacy-restore < /run/guard
p2=$(ping_from a 10.9.0.2); r2=$(refused); h2=$(held)
echo "@@ window, guard: ping $p2; clear replies a refused: $((r2 - r1)); b held back: $h2"
p3=$(ping_from c 10.9.1.2); h3=$(held)
echo "@@ clear flow c -> b, guard: ping $p3; b held back: $((h3 - h2))"
policies b 10.9.0.2 10.9.0.1
p4=$(ping_from a 10.9.0.2); h4=$(held); out=$(ip -n b -s xfrm state list src 10.9.0.2 dst 10.9.0.1 | grep -c 'lifetime current')
echo "@@ b's policies in, guard: ping $p4; b held back: $((h4 - h3))"
[ $p1 = unanswered ] && [ $((r1 - r0)) -ge 1 ] && [ $p2 = unanswered ] && [ $((r2 - r1)) = 0 ] && [ "$h2" -ge 1 ] \
  && [ $p3 = answered ] && [ $((h3 - h2)) = 0 ] && [ $p4 = answered ] && [ $((h4 - h3)) = 0 ] && echo "@@ ok" || echo "@@ FAILED"
sync; echo o > /proc/sysrq-trigger; exec sleep 30
