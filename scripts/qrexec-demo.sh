#!/usr/bin/env bash
# Aerie on one host: the admin daemon aeried on its own state folder, qubes
# created and changed with the qvm-* tools, and qrexec calls between two
# qubes ("work" and "vault", each with its own socket directory, domain,
# qrexec-agent and qrexec-daemon) decided by the policy daemon from a policy
# file and the live system info aeried gives it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/build/bin
STATE=$(mktemp -d "${TMPDIR:-/tmp}/aerie-demo.XXXXXX")
PIDS=()
cleanup() {
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
}

export QUBESD_SOCKET=$STATE/qubesd.sock
"$BIN/aeried" --state-dir "$STATE/aeried" --socket "$QUBESD_SOCKET" \
    --internal-socket "$STATE/qubesd.internal.sock" 2>>"$STATE/log" &
PIDS+=($!)
wait_for "$STATE/qubesd.internal.sock"

bold "The admin daemon (state in $STATE/aeried/qubes.db)"
echo
run "$BIN/qvm-create" --class TemplateVM --label black debian-12
run "$BIN/qvm-create" --template debian-12 --label red work
run "$BIN/qvm-create" --template debian-12 --label blue vault
run "$BIN/qvm-ls"
run "$BIN/qvm-prefs" work label green
run "$BIN/qvm-prefs" debian-12 memory 800
run "$BIN/qvm-prefs" work memory
run "$BIN/qvm-label" create pink 0xff69b4
run "$BIN/qvm-prefs" vault label pink
run "$BIN/qvm-features" vault service.crypto 1
run "$BIN/qvm-ls"
run "$BIN/qvm-remove" -f debian-12
echo

mkdir -p "$STATE/policy.d" "$STATE/qubes"
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

domid=0
for qube in work vault; do
    domid=$((domid + 1))
    mkdir -p "$STATE/$qube/vchan" "$STATE/$qube/rpc"
    env VCHAN_SOCKET_DIR="$STATE/$qube/vchan" VCHAN_DOMAIN=$domid QREXEC_SERVICE_PATH="$STATE/$qube/rpc" \
        "$BIN/qrexec-agent" --agent-socket="$STATE/$qube/agent.sock" 2>>"$STATE/log" &
    PIDS+=($!)
    wait_for "$STATE/$qube/agent.sock"
    env VCHAN_SOCKET_DIR="$STATE/$qube/vchan" "$BIN/qrexec-daemon" --direct --socket-dir="$STATE/qubes" \
        --policy-socket="$STATE/policy.sock" $domid $qube "$(id -un)" 2>>"$STATE/log" &
    PIDS+=($!)
    wait_for "$STATE/qubes/qrexec.$qube"
done

cat >"$STATE/vault/rpc/demo.Greet" <<'SERVICE'
#!/bin/sh
read -r name
echo "vault says hello to $name (the caller is $QREXEC_REMOTE_DOMAIN)"
SERVICE
printf '#!/bin/sh\necho "secret keys"\n' >"$STATE/vault/rpc/demo.ReadKeys"
chmod +x "$STATE/vault/rpc/"*

bold "qrexec between two qubes (policy: $STATE/policy.d/30-demo.policy)"
sed '/^#/d; s/^/    /' "$STATE/policy.d/30-demo.policy"
echo
call() {
    bold "work\$ echo alice | qrexec-client-vm vault $1"
    echo alice | "$BIN/qrexec-client-vm" --agent-socket="$STATE/work/agent.sock" vault "$1" 2>&1 | sed 's/^/    /'
    local rc=${PIPESTATUS[1]}
    echo "    (exit code $rc: $([ "$rc" = 0 ] && echo allowed || echo refused by policy))"
    echo
}
call demo.Greet
run "$BIN/qvm-tags" work add trusted
echo "    (the policy daemon sees the new tag at once: no reload, no restart)"
echo
call demo.Greet
call demo.ReadKeys
