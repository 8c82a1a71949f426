#!/usr/bin/env bash
# Aerie on one host: the admin daemon aeried on its own state folder, a
# template made from the host's own system, qubes created, changed and
# started with the qvm-* tools (each an isolated compartment: its own
# namespaces, cgroups, root file system and private volume, with Aerie's
# qrexec agent inside), commands run in them with qvm-run, and qrexec calls
# between them decided by the policy daemon from a policy file and the live
# system info aeried gives it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/build/bin
STATE=$(mktemp -d "${TMPDIR:-/tmp}/aerie-demo.XXXXXX")
PIDS=()
cleanup() {
    QUBESD_SOCKET=$STATE/qubesd.sock "$BIN/qvm-shutdown" --all --wait >/dev/null 2>&1
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$STATE"
}
trap cleanup EXIT

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
wait_for() { for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.05; done; echo "timed out waiting for $1" >&2; exit 1; }
run() {  # shows a dom0 command and its output
    local shown=("${1##*/}" "${@:2}")
    bold "dom0\$ ${shown[*]}"
    "$@" 2>&1 | sed 's/^/    /'
    return "${PIPESTATUS[0]}"
}

if [ "$(id -u)" != 0 ]; then
    echo "qrexec-demo: qubes need root (namespaces, cgroups, mounts); skipped" >&2
    exit 0
fi

export QUBESD_SOCKET=$STATE/qubesd.sock QREXEC_SOCKET_DIR=$STATE/qubes
"$BIN/aeried" --state-dir "$STATE/aeried" --socket "$QUBESD_SOCKET" \
    --internal-socket "$STATE/qubesd.internal.sock" --runtime-dir "$STATE/run" \
    --qrexec-socket-dir "$QREXEC_SOCKET_DIR" --policy-socket "$STATE/policy.sock" 2>>"$STATE/log" &
PIDS+=($!)
wait_for "$STATE/qubesd.internal.sock"

mkdir -p "$STATE/policy.d"
cat >"$STATE/policy.d/30-demo.policy" <<'POLICY'
# SERVICE      ARGUMENT  SOURCE          TARGET  ACTION
demo.Greet     *         @tag:trusted    vault   allow
demo.ReadKeys  *         @anyvm          vault   deny
*              *         @anyvm          @anyvm  deny
POLICY
# No --system-info: the policy daemon asks aeried for every decision.
"$BIN/qrexec-policy-daemon" --socket "$STATE/policy.sock" --path "$STATE/policy.d" \
    --internal-socket "$STATE/qubesd.internal.sock" 2>>"$STATE/log" &
PIDS+=($!)
wait_for "$STATE/policy.sock"

bold "The admin daemon (state in $STATE/aeried)"
echo
run "$BIN/qvm-template" create-from-host debian-12
run "$BIN/qvm-create" --template debian-12 --label red work
run "$BIN/qvm-create" --template debian-12 --label blue vault
run "$BIN/qvm-prefs" work label green
run "$BIN/qvm-prefs" debian-12 memory 800
run "$BIN/qvm-prefs" work memory
run "$BIN/qvm-label" create pink 0xff69b4
run "$BIN/qvm-prefs" vault label pink
run "$BIN/qvm-features" vault service.crypto 1
run "$BIN/qvm-remove" -f debian-12
echo

bold "Installing two services in the template (its root is writable while it runs)"
run "$BIN/qvm-start" debian-12
printf '#!/bin/sh\nread -r name\necho "vault says hello to $name (the caller is $QREXEC_REMOTE_DOMAIN)"\n' |
    run "$BIN/qvm-run" -p -u root debian-12 \
        'mkdir -p /etc/qubes-rpc && cat > /etc/qubes-rpc/demo.Greet && chmod +x /etc/qubes-rpc/demo.Greet'
printf '#!/bin/sh\necho "secret keys"\n' |
    run "$BIN/qvm-run" -p -u root debian-12 \
        'cat > /etc/qubes-rpc/demo.ReadKeys && chmod +x /etc/qubes-rpc/demo.ReadKeys'
run "$BIN/qvm-shutdown" --wait debian-12
echo

bold "Real qubes"
start_ms=$(date +%s%N)
run "$BIN/qvm-start" work
echo "    (started in $(( ($(date +%s%N) - start_ms) / 1000000 )) ms)"
run "$BIN/qvm-ls"
run "$BIN/qvm-run" -p work 'echo "I am $(id -un) in $(hostname)"; ps ax; echo; ls /'
run "$BIN/qvm-run" -p work 'touch /usr/bin/x 2>&1; cat /etc/shadow 2>&1 | head -1; ip -o link 2>/dev/null | cut -d" " -f2'
echo

bold "qrexec between the qubes (policy: $STATE/policy.d/30-demo.policy)"
sed '/^#/d; s/^/    /' "$STATE/policy.d/30-demo.policy"
echo
call() {
    bold "work\$ echo alice | qrexec-client-vm vault $1"
    echo alice | "$BIN/qvm-run" -p work "qrexec-client-vm vault $1" 2>&1 | sed 's/^/    /'
    local rc=${PIPESTATUS[1]}
    echo "    (exit code $rc: $([ "$rc" = 0 ] && echo allowed || echo refused by policy))"
    echo
}
call demo.Greet
run "$BIN/qvm-tags" work add trusted
echo "    (the policy daemon sees the new tag at once: no reload, no restart)"
echo
call demo.Greet
echo "    (vault was halted: the policy's autostart started it for the call)"
run "$BIN/qvm-ls"
call demo.ReadKeys
run "$BIN/qvm-shutdown" --all --wait
run "$BIN/qvm-ls"
