#!/usr/bin/env bash
# Runs qrexec-policy-exec, qubes-policy-lint and qrexec-policy-graph against
# the shipped example policy and against broken policies, comparing exact text.
set -u
BIN=$1
EXAMPLES=$2
SYSINFO=$EXAMPLES/system-info.json
POLICY=$EXAMPLES/policy.d
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pass=0
fail=0

check() {  # NAME EXPECTED_RC EXPECTED_STDOUT -- COMMAND...
    local name=$1 want_rc=$2 want_out=$3
    shift 4
    local out rc
    out=$("$@" 2>"$WORK/stderr")
    rc=$?
    if [ "$rc" = "$want_rc" ] && [ "$out" = "$want_out" ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $name (rc=$rc, want $want_rc)"
        diff <(printf '%s\n' "$want_out") <(printf '%s\n' "$out") | sed 's/^/    /'
        sed 's/^/    stderr: /' "$WORK/stderr"
    fi
}

check_stderr() {  # NAME PATTERN: the last command's stderr must contain PATTERN
    if grep -qF -- "$2" "$WORK/stderr"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $1: stderr lacks '$2'"
        sed 's/^/    stderr: /' "$WORK/stderr"
    fi
}

exec_policy() { "$BIN/qrexec-policy-exec" --system-info "$SYSINFO" --path "$POLICY" "$@"; }

# --- answers ---------------------------------------------------------------
check "allow to a qube" 0 "user=DEFAULT
result=allow
target=vault
target_uuid=uuid:0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53
autostart=True
requested_target=vault" -- exec_policy work vault qubes.Filecopy+

check "deny by rule" 1 "result=deny" -- exec_policy personal vault qubes.Filecopy+
check_stderr "deny reason names file and line" "denied by policy $POLICY/30-user.policy:4"

check "allow to dom0" 0 "user=DEFAULT
result=allow
target=dom0
autostart=True
requested_target=dom0" -- exec_policy work dom0 qubes.GetDate
check "allow to @adminvm" 0 "user=DEFAULT
result=allow
target=dom0
autostart=True
requested_target=@adminvm" -- exec_policy work @adminvm qubes.GetDate

check "allow to @dispvm" 0 "user=DEFAULT
result=allow
target=@dispvm:default-dvm
target_uuid=@dispvm:uuid:4c2b8a7e-1f3d-4b6a-9e5c-8d7f6a5b4c32
autostart=True
requested_target=@dispvm" -- exec_policy work @dispvm qubes.OpenInVM

check "@default redirected by target=" 0 "user=DEFAULT
result=allow
target=@dispvm:default-dvm
target_uuid=@dispvm:uuid:4c2b8a7e-1f3d-4b6a-9e5c-8d7f6a5b4c32
autostart=True
requested_target=@default" -- exec_policy work "" qubes.OpenInVM

check "RemoteVM goes to its relay" 0 "user=DEFAULT
result=allow
target=sys-relay
target_uuid=uuid:2d4f6a8c-0e1b-4d3f-a5c7-9e1b3d5f7a90
autostart=True
requested_target=remote-vault
service=qubesair.SSHProxy+remote-vault+qubes.Backup+" -- exec_policy work remote-vault qubes.Backup

check "relay speaking for a RemoteVM" 0 "user=DEFAULT
result=allow
target=work
target_uuid=uuid:6f1c0d4e-2a7b-4c38-9a51-3c1e8f0b7d21
autostart=True
requested_target=work
policy_source=remote-vault" -- exec_policy --requested-source remote-vault sys-relay work qubes.Backup

# As the qrexec daemon passes it (Qubes' argument order has no place for it).
check "requested source from the environment" 0 "user=DEFAULT
result=allow
target=work
target_uuid=uuid:6f1c0d4e-2a7b-4c38-9a51-3c1e8f0b7d21
autostart=True
requested_target=work
policy_source=remote-vault" -- env QREXEC_REQUESTED_SOURCE=remote-vault "$BIN/qrexec-policy-exec" \
    --system-info "$SYSINFO" --path "$POLICY" -- sys-relay work qubes.Backup
check "non-relay claiming a RemoteVM" 1 "result=deny" -- exec_policy --requested-source remote-vault personal work qubes.Backup
check_stderr "relay check reason" "personal is not a relay for remote-vault"
check "requested source not a RemoteVM" 1 "result=deny" -- exec_policy --requested-source work sys-relay work qubes.Backup
check_stderr "RemoteVM-only reason" "requested source is only authorized for RemoteVM"
check "unknown requested source" 1 "result=deny" -- exec_policy --requested-source nosuch sys-relay work qubes.Backup
check_stderr "unknown source reason" "unknown requested source qube"

check "user= and autostart=no on a halted target" 1 "result=deny" -- exec_policy work vault qubes.Gpg+sign
check_stderr "autostart reason" "would require autostart"

check "ask without anyone to ask" 1 "result=deny" -- exec_policy personal work qubes.Filecopy
check "ask with --assume-yes-for-ask" 0 "user=DEFAULT
result=allow
target=work
target_uuid=uuid:6f1c0d4e-2a7b-4c38-9a51-3c1e8f0b7d21
autostart=True
requested_target=work" -- exec_policy --assume-yes-for-ask personal work qubes.Filecopy
check "ask with --just-evaluate" 1 "result=deny" -- exec_policy --just-evaluate personal work qubes.Filecopy
check "allow with --just-evaluate" 0 "result=allow" -- exec_policy --just-evaluate work vault qubes.Filecopy+
# Both flags: the ask is answered yes, and only evaluating prints the allow.
check "ask with --just-evaluate --assume-yes-for-ask" 0 "result=allow" -- exec_policy --just-evaluate --assume-yes-for-ask personal work qubes.Filecopy
# The yes is the requested target as spelled: a uuid is no candidate of the ask.
check "assumed yes to a uuid" 1 "result=deny" -- exec_policy --assume-yes-for-ask personal uuid:6f1c0d4e-2a7b-4c38-9a51-3c1e8f0b7d21 qubes.Filecopy
# A qube is no candidate of its own ask.
check "ask to itself, assumed yes" 1 "result=deny" -- exec_policy --just-evaluate --assume-yes-for-ask personal personal qubes.Filecopy
check "no matching rule" 1 "result=deny" -- exec_policy work vault no.Such.Service
# The target keeps the caller's spelling, as Qubes' answer does.
check "uuid target" 0 "user=DEFAULT
result=allow
target=uuid:0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53
target_uuid=uuid:0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53
autostart=True
requested_target=uuid:0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53" -- exec_policy work uuid:0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53 qubes.Filecopy

# /run over /etc: the first --path wins a base-name clash.
mkdir -p "$WORK/run"
printf 'qubes.Filecopy * @anyvm @anyvm deny\n' >"$WORK/run/30-user.policy"
check "first --path overrides" 1 "result=deny" -- "$BIN/qrexec-policy-exec" --system-info "$SYSINFO" --path "$WORK/run" --path "$POLICY" work vault qubes.Filecopy

# --- bad input: clear error with file and line, deny, no crash --------------
bad() {  # NAME CONTENT EXPECTED_STDERR_FRAGMENT
    local dir="$WORK/bad-$RANDOM$RANDOM"
    mkdir -p "$dir"
    printf '%b' "$2" >"$dir/10-bad.policy"
    printf 'qubes.Filecopy * @anyvm @anyvm allow\n' >"$dir/20-good.policy"
    check "$1" 1 "result=deny" -- "$BIN/qrexec-policy-exec" --system-info "$SYSINFO" --path "$dir" work vault qubes.Filecopy
    check_stderr "$1 (message)" "$(printf '%b' "$3" | sed "s|@DIR@|$dir|g")"
}
bad "wrong number of fields" 'a b c\n' '@DIR@/10-bad.policy:1: wrong number of fields'
bad "binary garbage" '\x00\xff\xfe\x01garbage\n' '@DIR@/10-bad.policy:1: line contains a NUL byte'
bad "invalid UTF-8" '# fine\n\xff\xfe * @anyvm @anyvm allow\n' '@DIR@/10-bad.policy:2: line is not valid UTF-8 text'
head -c 1048576 /dev/zero | tr '\0' 'a' >"$WORK/mb-line"
bad "1 MB line" "$(cat "$WORK/mb-line")\n" '@DIR@/10-bad.policy:1: line too long (1048576 bytes, at most 65536)'
bad "include cycle" '!include 10-bad.policy\n' '@DIR@/10-bad.policy:1: circular include: @DIR@/10-bad.policy'
bad "missing include" '\n!include nosuch/file\n' '@DIR@/10-bad.policy:2: not a file: @DIR@/nosuch/file'
bad "missing include-dir" '!include-dir nodir\n' '@DIR@/10-bad.policy:1: not a directory: @DIR@/nodir'
bad "invalid token" 'svc * @foo @anyvm allow\n' "@DIR@/10-bad.policy:1: invalid source token: '@foo'"
bad "invalid action" 'svc * @anyvm @anyvm maybe\n' '@DIR@/10-bad.policy:1: invalid action: maybe'

baddir="$WORK/badname"
mkdir -p "$baddir"
printf 'qubes.Filecopy * @anyvm @anyvm allow\n' >"$baddir/Bad-Name.policy"
check "invalid file name rejects the whole policy" 1 "result=deny" -- "$BIN/qrexec-policy-exec" --system-info "$SYSINFO" --path "$baddir" work vault qubes.Filecopy
check_stderr "invalid file name message" "invalid filename: $baddir/Bad-Name.policy"

if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    unreadable="$WORK/unreadable"
    mkdir -p "$unreadable"
    printf 'qubes.Filecopy * @anyvm @anyvm allow\n' >"$unreadable/10-x.policy"
    chmod 000 "$unreadable/10-x.policy"
    # The unprivileged run may not be able to enter the checkout: give it its own system info.
    cp "$SYSINFO" "$WORK/system-info.json"
    chmod 644 "$WORK/system-info.json"
    chmod 755 "$WORK"
    check "unreadable file" 1 "result=deny" -- setpriv --reuid=65534 --regid=65534 --clear-groups \
        "$BIN/qrexec-policy-exec" --system-info "$WORK/system-info.json" --path "$unreadable" work vault qubes.Filecopy
    check_stderr "unreadable message" "cannot read $unreadable/10-x.policy"
fi

printf 'not json' >"$WORK/bad.json"
check "bad system info" 1 "result=deny" -- "$BIN/qrexec-policy-exec" --system-info "$WORK/bad.json" --path "$POLICY" work vault qubes.Filecopy
check_stderr "bad system info message" "system info is not valid JSON"

# --- lint -------------------------------------------------------------------
printf 'ok * @anyvm @anyvm allow\nbad\n# comment\nsvc * @anyvm @anyvm allow notify=maybe\n' >"$WORK/lint.policy"
check "lint reports each error" 1 "$WORK/lint.policy:2: error: wrong number of fields
$WORK/lint.policy:4: error: 'notify' is 'maybe', but can be only 'yes' or 'no'" -- "$BIN/qubes-policy-lint" "$WORK/lint.policy"
check "lint -s shows the line" 1 "$WORK/lint.policy:2: error: wrong number of fields: bad
$WORK/lint.policy:4: error: 'notify' is 'maybe', but can be only 'yes' or 'no': svc * @anyvm @anyvm allow notify=maybe" -- "$BIN/qubes-policy-lint" -s "$WORK/lint.policy"
check "lint clean files" 0 "" -- "$BIN/qubes-policy-lint" "$POLICY/30-user.policy" "$POLICY/90-default.policy"
printf '$anyvm $anyvm allow,target=work\n$anyvm dom0 bogus\n' >"$WORK/old-format"
check "lint -i old format" 1 "$WORK/old-format:2: error: invalid action: bogus" -- "$BIN/qubes-policy-lint" -i "$WORK/old-format"
check "lint missing file" 1 "$WORK/none:0: error: File does not exist." -- "$BIN/qubes-policy-lint" "$WORK/none"

# --- graph ------------------------------------------------------------------
check "graph of one service" 0 'digraph g {
  "work" -> "vault" [label="qubes.Filecopy" color=red];
}' -- "$BIN/qrexec-policy-graph" --policy-dir "$POLICY" --system-info "$SYSINFO" --service qubes.Filecopy
if command -v dot >/dev/null; then
    "$BIN/qrexec-policy-graph" --policy-dir "$POLICY" --system-info "$SYSINFO" --include-ask >"$WORK/g.dot"
    check "graph is valid DOT" 0 "" -- dot -Tsvg -o /dev/null "$WORK/g.dot"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
