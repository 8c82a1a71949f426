#!/usr/bin/env bash
# Aerie's qrexec on one host: two qubes ("work" and "vault"), each with its own
# socket directory, domain number, qrexec-agent and qrexec-daemon, and one
# qrexec-policy-daemon deciding every call from a policy file.
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

mkdir -p "$STATE/policy.d" "$STATE/qubes"
cat >"$STATE/policy.d/30-demo.policy" <<'POLICY'
# SERVICE      ARGUMENT  SOURCE  TARGET  ACTION
demo.Greet     *         work    vault   allow
demo.ReadKeys  *         work    vault   deny
*              *         @anyvm  @anyvm  deny
POLICY
cat >"$STATE/system-info.json" <<'JSON'
{"domains": {
  "dom0":  {"type": "AdminVM", "tags": [], "uuid": "00000000-0000-0000-0000-000000000000", "power_state": "Running"},
  "work":  {"type": "AppVM", "tags": [], "uuid": "6f1c0d4e-2a7b-4c38-9a51-3c1e8f0b7d21", "power_state": "Running"},
  "vault": {"type": "AppVM", "tags": [], "uuid": "0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53", "power_state": "Running"}}}
JSON

"$BIN/qrexec-policy-daemon" --socket "$STATE/policy.sock" --path "$STATE/policy.d" \
    --system-info "$STATE/system-info.json" 2>>"$STATE/log" &
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
call demo.ReadKeys
