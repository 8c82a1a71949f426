#!/usr/bin/env bash
# Qubes Air with Aerie: two hosts (each a network namespace of its own, joined
# by a virtual link), each with its own aeried, policy, qubes and relay. The
# admin of each host exports a zone description with `qvm-air export`, the
# other host pairs with it (`qvm-air pair`: keys exchanged, the other zone's
# qubes registered as RemoteVMs), and a qube on host A calls a qube on host B
# over mutually authenticated TLS 1.3: allowed by both policies, then denied
# by host B's.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/build/bin
TAG=$$
DIR=$(mktemp -d "${TMPDIR:-/tmp}/aerie-air-demo.XXXXXX")
chmod 755 "$DIR"
NS_A=aerie-demo-$TAG-a NS_B=aerie-demo-$TAG-b
ADDR_A=10.99.$((TAG % 200)).1 ADDR_B=10.99.$((TAG % 200)).2
PIDS=()

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
wait_for() { for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.05; done; echo "timed out waiting for $1" >&2; exit 1; }
on() {  # on HOST COMMAND...: a dom0 command of that host, shown with its output
    local host=$1 shown=("${2##*/}" "${@:3}")
    shift
    bold "dom0@host-$host\$ ${shown[*]}"
    QUBESD_SOCKET=$DIR/$host/qubesd.sock QREXEC_SOCKET_DIR=$DIR/$host/qubes "$@" 2>&1 | sed 's/^/    /'
    return "${PIPESTATUS[0]}"
}
export_zone() {  # export_zone HOST FILE ARGS...: qvm-air export, its raw output kept in FILE
    local host=$1 file=$2
    shift 2
    bold "dom0@host-$host\$ qvm-air export $*"
    QUBESD_SOCKET=$DIR/$host/qubesd.sock QREXEC_SOCKET_DIR=$DIR/$host/qubes "$BIN/qvm-air" export "$@" >"$file" 2>>"$DIR/log" ||
        { echo "air-demo: qvm-air export failed" >&2; tail -5 "$DIR/log" >&2; exit 1; }
    # The description, its keys shortened.
    python3 -c 'import json,sys
z = json.load(open(sys.argv[1]))
for k in ("tls_cert", "ssh_key", "ssh_host_key"):
    if k in z: z[k] = z[k].strip().splitlines()[0][:40] + " ..."
print(json.dumps(z, indent=2))' "$file" | sed 's/^/    /'
}
quiet() {  # quiet HOST COMMAND...
    local host=$1
    shift
    QUBESD_SOCKET=$DIR/$host/qubesd.sock QREXEC_SOCKET_DIR=$DIR/$host/qubes "$@" >/dev/null 2>>"$DIR/log" ||
        { echo "air-demo: failed: ${*##*/}" >&2; tail -5 "$DIR/log" >&2; exit 1; }
}
cleanup() {
    for h in a b; do
        QUBESD_SOCKET=$DIR/$h/qubesd.sock "$BIN/qvm-shutdown" --all --wait >/dev/null 2>&1
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    ip netns del "$NS_A" 2>/dev/null
    ip netns del "$NS_B" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT

if [ "$(id -u)" != 0 ]; then
    echo "air-demo: hosts and qubes need root (namespaces, cgroups, mounts); skipped" >&2
    exit 0
fi

bold "Qubes Air: two hosts"
ip netns add "$NS_A" && ip netns add "$NS_B"
ip link add "aed$TAG-a" type veth peer name "aed$TAG-b"
ip link set "aed$TAG-a" netns "$NS_A" && ip link set "aed$TAG-b" netns "$NS_B"
ip -n "$NS_A" addr add "$ADDR_A/24" dev "aed$TAG-a" && ip -n "$NS_A" link set "aed$TAG-a" up
ip -n "$NS_B" addr add "$ADDR_B/24" dev "aed$TAG-b" && ip -n "$NS_B" link set "aed$TAG-b" up
ip -n "$NS_A" link set lo up && ip -n "$NS_B" link set lo up
echo "    host a: network namespace $NS_A, $ADDR_A"
echo "    host b: network namespace $NS_B, $ADDR_B"
echo

start_host() {  # start_host LETTER NAMESPACE ADDRESS POLICY
    local h=$1 ns=$2 addr=$3 policy=$4 d=$DIR/$1
    mkdir -p "$d/policy.d"
    printf '%s\n' "$policy" >"$d/policy.d/30-demo.policy"
    nsenter --net="/run/netns/$ns" "$BIN/aeried" --state-dir "$d/aeried" --socket "$d/qubesd.sock" \
        --internal-socket "$d/qubesd.internal.sock" --runtime-dir "$d/run" --qrexec-socket-dir "$d/qubes" \
        --policy-socket "$d/policy.sock" --policy-dir "$d/policy.d" --air-listen "$addr:7443" 2>>"$DIR/log" &
    PIDS+=($!)
    wait_for "$d/qubesd.internal.sock"
    "$BIN/qrexec-policy-daemon" --socket "$d/policy.sock" --path "$d/policy.d" \
        --internal-socket "$d/qubesd.internal.sock" 2>>"$DIR/log" &
    PIDS+=($!)
    wait_for "$d/policy.sock"
}

POLICY_A='# host a: work may call vault on host b (through the relay)
demo.Greet  *  work  b-vault  allow'
POLICY_B='# host b: the qube work of zone a may call vault
demo.Greet  *  a-work  vault  allow'
start_host a "$NS_A" "$ADDR_A" "$POLICY_A"
start_host b "$NS_B" "$ADDR_B" "$POLICY_B"

bold "Each host: a template, its qubes and a relay"
quiet a "$BIN/qvm-template" create-from-host tpl-a
quiet b "$BIN/qvm-template" create-from-host tpl-b
quiet b "$BIN/qvm-start" tpl-b
printf '#!/bin/sh\necho "Hello $QREXEC_REMOTE_DOMAIN, this is $(hostname) on host b"\n' |
    quiet b "$BIN/qvm-run" -p -u root tpl-b 'mkdir -p /etc/qubes-rpc && cat > /etc/qubes-rpc/demo.Greet && chmod 755 /etc/qubes-rpc/demo.Greet'
quiet b "$BIN/qvm-shutdown" --wait tpl-b
for q in work relay-a; do quiet a "$BIN/qvm-create" --template tpl-a --label red "$q"; done
for q in vault relay-b; do quiet b "$BIN/qvm-create" --template tpl-b --label black "$q"; done
echo "    host a: work, relay-a        host b: vault, relay-b"
echo

bold "Pairing: each admin exports a zone, the other pairs with it"
export_zone a "$DIR/zone-a.json" --zone a --relay relay-a --address "$ADDR_A:7443" work
export_zone b "$DIR/zone-b.json" --zone b --relay relay-b --address "$ADDR_B:7443" vault
on a "$BIN/qvm-air" pair --relay relay-a "$DIR/zone-b.json"
on b "$BIN/qvm-air" pair --relay relay-b "$DIR/zone-a.json"
on a "$BIN/qvm-air" list
on a "$BIN/qvm-ls" --fields NAME,CLASS,STATE
echo
bold "Policies"
printf '%s\n' "$POLICY_A" | sed 's/^/    /'
printf '%s\n' "$POLICY_B" | sed 's/^/    /'
echo

quiet a "$BIN/qvm-start" work
bold "A call from host a's work to host b's vault (both policies allow):"
start=$(date +%s%N)
on a "$BIN/qvm-run" -p work 'qrexec-client-vm b-vault demo.Greet'
echo "    (first call, the relays opening their TLS link: $(( ($(date +%s%N) - start) / 1000000 )) ms)"
warm=$(QUBESD_SOCKET=$DIR/a/qubesd.sock QREXEC_SOCKET_DIR=$DIR/a/qubes "$BIN/qvm-run" -p work \
    'for i in 1 2 3 4 5; do qrexec-client-vm b-vault demo.Greet >/dev/null; done
     s=$(date +%s%N); qrexec-client-vm b-vault demo.Greet >/dev/null; echo $(( ($(date +%s%N) - s) / 1000 ))' 2>>"$DIR/log")
echo "    (a later call, the TLS link kept open, measured in work: ${warm:-?} us)"
echo

bold "Host b's admin now denies it:"
POLICY_B='demo.Greet  *  a-work  vault  deny'
printf '%s\n' "$POLICY_B" >"$DIR/b/policy.d/30-demo.policy"
printf '%s\n' "$POLICY_B" | sed 's/^/    /'
on a "$BIN/qvm-run" -p work 'qrexec-client-vm b-vault demo.Greet; echo "exit code $?"'
echo "    -> denied on host b: host a's policy allowed it, host b's did not."
