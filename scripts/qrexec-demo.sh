#!/usr/bin/env bash
# Aerie on one host: the admin daemon aeried on its own state folder, a
# template made from the host's own system, qubes created, changed and
# started with the qvm-* tools (each an isolated compartment: its own
# namespaces, cgroups, root file system and private volume, with Aerie's
# qrexec agent inside), commands run in them with qvm-run, and qrexec calls
# between them decided by the policy daemon from a policy file and the live
# system info aeried gives it; then disposables: the same call to a new
# disposable, cold and preloaded, with the times side by side.
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
    --qrexec-socket-dir "$QREXEC_SOCKET_DIR" --policy-socket "$STATE/policy.sock" \
    --policy-dir "$STATE/policy.d" 2>>"$STATE/log" &
PIDS+=($!)
wait_for "$STATE/qubesd.internal.sock"

mkdir -p "$STATE/policy.d"
cat >"$STATE/policy.d/30-demo.policy" <<'POLICY'
# SERVICE      ARGUMENT  SOURCE          TARGET  ACTION
demo.Greet     *         @tag:trusted    vault   allow
demo.ReadKeys  *         @anyvm          vault   deny
demo.Whoami    *         work            @dispvm allow
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
printf '#!/bin/sh\nread -r name < /proc/sys/kernel/hostname\necho "$name"\n' |
    run "$BIN/qvm-run" -p -u root debian-12 \
        'cat > /etc/qubes-rpc/demo.Whoami && chmod +x /etc/qubes-rpc/demo.Whoami'
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

bold "Disposables: a new qube for every call, gone when the call ends"
run "$BIN/qvm-create" --template debian-12 --label red dvm
run "$BIN/qvm-prefs" dvm template_for_dispvms True
run "$BIN/qvm-prefs" work default_dispvm dvm
# Five calls from work to @dispvm, each timed inside work until the answer.
timed_calls() {
    "$BIN/qvm-run" -p work 'bash -s' <<'CALLS' 2>&1
for i in 1 2 3 4 5; do
    t0=${EPOCHREALTIME/./}
    name=$(qrexec-client-vm @dispvm demo.Whoami)
    t1=${EPOCHREALTIME/./}
    echo "$name $(( (t1 - t0) / 10 ))"
    sleep 1
done
CALLS
}
show_calls() {  # "NAME CENTI-MS" lines -> shown; the median goes to $2
    local -n median=$2
    local times=()
    while read -r name t; do
        printf '    answered by %-9s in %d.%02d ms\n' "$name" $((t / 100)) $((t % 100))
        times+=("$t")
    done <<<"$1"
    median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
}
bold "work\$ qrexec-client-vm @dispvm demo.Whoami    (five times, cold: each call starts a new disposable)"
show_calls "$(timed_calls)" cold
run "$BIN/qvm-ls"
echo "    (every disposable was removed when its call ended)"
echo
run "$BIN/qvm-features" dvm preload-dispvm-delay 0.5
run "$BIN/qvm-features" dvm preload-dispvm-max 2
for _ in $(seq 100); do
    [ "$("$BIN/qvm-ls" | grep -c ' Paused ')" = 2 ] && break
    sleep 0.1
done
run "$BIN/qvm-ls"
echo "    (two disposables preloaded: started, then paused until a call needs one)"
echo
bold "work\$ qrexec-client-vm @dispvm demo.Whoami    (five times, preloaded: refilled half a second after each use)"
show_calls "$(timed_calls)" warm
echo
bold "The same call to a new disposable:"
printf '    cold       %d.%02d ms (median)\n' $((cold / 100)) $((cold % 100))
printf '    preloaded  %d.%02d ms (median)\n' $((warm / 100)) $((warm % 100))
echo
run "$BIN/qvm-features" dvm preload-dispvm-max 0
run "$BIN/qvm-shutdown" --all --wait
run "$BIN/qvm-ls"
