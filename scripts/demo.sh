#!/usr/bin/env bash
# Aerie's demo: evaluates a set of qrexec calls against the shipped example
# policy (examples/policy.d) and system info (examples/system-info.json),
# printing each decision the way the qrexec daemon receives it.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/build/bin
SYSINFO=$ROOT/examples/system-info.json
POLICY=$ROOT/examples/policy.d

bold() { printf '\033[1m%s\033[0m\n' "$*"; }

call() {  # SOURCE TARGET SERVICE [extra flags...]
    local source=$1 target=$2 service=$3
    shift 3
    local shown=${target:-"''"}
    bold "$ qrexec-policy-exec${*:+ $*} $source $shown $service"
    local out rc
    out=$("$BIN/qrexec-policy-exec" --system-info "$SYSINFO" --path "$POLICY" "$@" \
          "$source" "$target" "$service" 2>&1)
    rc=$?
    printf '%s\n' "$out" | sed 's/^/    /'
    if [ $rc -eq 0 ]; then echo "    -> ALLOWED"; else echo "    -> DENIED (exit $rc)"; fi
    echo
}

bold "Aerie policy engine demo"
echo "Policy files:"
for f in "$POLICY"/*.policy; do
    echo "  --- $(basename "$f")"
    grep -v '^#' "$f" | sed '/^$/d; s/^/    /'
done
echo

call work vault qubes.Filecopy+
call personal vault qubes.Filecopy+
call work dom0 qubes.GetDate
call work @dispvm qubes.OpenInVM
call work "" qubes.OpenInVM
call work remote-vault qubes.Backup
call sys-relay work qubes.Backup --requested-source remote-vault
call personal work qubes.Backup --requested-source remote-vault
call personal work qubes.Filecopy
call personal work qubes.Filecopy --assume-yes-for-ask
call work vault qubes.Gpg+sign

bold "Who may call whom (qrexec-policy-graph, allow edges):"
"$BIN/qrexec-policy-graph" --policy-dir "$POLICY" --system-info "$SYSINFO" | sed 's/^/    /'
echo
bash "$ROOT/scripts/qrexec-demo.sh"
bash "$ROOT/scripts/air-demo.sh"
