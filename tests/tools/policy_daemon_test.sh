#!/usr/bin/env bash
# shellcheck disable=SC2015  # "A && ok || bad": ok always succeeds
# Runs qrexec-policy-daemon on a temporary socket with the example policy and
# speaks its socket protocol: exact replies for allow / deny / ask, the
# optional keys, malformed requests (no reply), stalled clients, a policy
# changed while it runs, and a clean exit on SIGTERM.
set -u
BIN=$1
EXAMPLES=$2
WORK=$(mktemp -d)
SYSINFO=$WORK/system-info.json
SOCK=$WORK/policy.sock
POLICY=$WORK/policy.d
DAEMON_PID=
cleanup() {
    if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
pass=0
fail=0
cp -r "$EXAMPLES/policy.d" "$POLICY"
cp "$EXAMPLES/system-info.json" "$SYSINFO"
# The interpreter itself, not a version-manager wrapper around it (faster).
PY=$(python3 -c 'import sys; print(sys.executable)') || PY=python3

# ask.py SOCKET [shut]: sends stdin (then shuts its sending side down if asked),
# prints the reply up to EOF followed by "<EOF>" ("<TIMEOUT>" if the daemon
# neither answers nor closes within 5 s).
cat >"$WORK/ask.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
try:
    s.sendall(sys.stdin.buffer.read())
    if sys.argv[2:] == ["shut"]:
        s.shutdown(socket.SHUT_WR)
except (BrokenPipeError, ConnectionResetError):
    pass
reply = b""
end = "<EOF>"
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
except ConnectionResetError:
    pass
except socket.timeout:
    end = "<TIMEOUT>"
sys.stdout.write(reply.decode("ascii", "replace") + end)
PY

# crowd.py SOCKET N: holds N connections that sent half a request, then asks
# one complete question and prints its reply like ask.py.
cat >"$WORK/crowd.py" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[2])):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(sys.argv[1])
    c.sendall(b"source=work\nintended_target=vault\n")
    held.append(c)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"source=work\nintended_target=vault\nservice_and_arg=qubes.Filecopy+\n\n")
reply = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
except socket.timeout:
    reply += b"<TIMEOUT>"
sys.stdout.write(reply.decode() + "<EOF>")
PY

# stall.py SOCKET: sends half a request and prints how many whole seconds
# pass until the daemon closes the connection.
cat >"$WORK/stall.py" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sys.argv[1])
s.sendall(b"source=work\n")
start = time.monotonic()
try:
    data = s.recv(4096)
except ConnectionResetError:
    data = b""
print("closed" if not data else "data", int(time.monotonic() - start))
PY

# stale.py PATH: leaves a socket file nobody listens on.
cat >"$WORK/stale.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
PY

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

check_reply() {  # NAME EXPECTED_REPLY REQUEST_TEXT (printf format, no arguments)
    local name=$1 want="$2<EOF>" got
    # shellcheck disable=SC2059
    got=$(printf "$3" | "$PY" "$WORK/ask.py" "$SOCK")
    if [ "$got" = "$want" ]; then
        ok
    else
        bad "$name"
        diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | sed 's/^/    /'
    fi
}

check_log() {  # NAME TEXT: the daemon's log must contain TEXT
    if grep -qF -- "$2" "$WORK/daemon.log"; then ok; else
        bad "$1: log lacks '$2'"
        sed 's/^/    log: /' "$WORK/daemon.log"
    fi
}

start_daemon() {
    "$BIN/qrexec-policy-daemon" --socket "$SOCK" --path "$POLICY" --system-info "$SYSINFO" \
        --read-timeout 2 2>>"$WORK/daemon.log" &
    DAEMON_PID=$!
    for _ in $(seq 100); do
        [ -S "$SOCK" ] && grep -q "listening on" "$WORK/daemon.log" && return 0
        sleep 0.05
    done
    echo "FAIL: daemon did not start"
    sed 's/^/    log: /' "$WORK/daemon.log"
    exit 1
}

# Replies are qrexec-policy-exec's text without its last newline, as Qubes' daemon sends them.
ALLOW_VAULT="user=DEFAULT
result=allow
target=vault
target_uuid=uuid:0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53
autostart=True
requested_target=vault"
DENY="result=deny"
REQ_VAULT='source=work\nintended_target=vault\nservice_and_arg=qubes.Filecopy+\n'
REQ_ASK='source=work\nintended_target=personal\nservice_and_arg=qubes.Filecopy+\n'
REQ_BACKUP='intended_target=work\nservice_and_arg=qubes.Backup+\nrequested_source=remote-vault\n'

# --- start, over a stale socket file -------------------------------------------
"$PY" "$WORK/stale.py" "$SOCK"
[ -S "$SOCK" ] && ok || bad "stale socket was not created"
start_daemon
check_log "policy loaded at start" "policy loaded: 11 rules"

# --- answers ---------------------------------------------------------------------
check_reply "allow" "$ALLOW_VAULT" "$REQ_VAULT\n"

check_reply "deny by rule" "$DENY" \
    'source=personal\nintended_target=vault\nservice_and_arg=qubes.Filecopy+\n\n'
check_log "deny is logged with its rule" "30-user.policy:4"

check_reply "ask with nobody to ask denies" "$DENY" "$REQ_ASK\n"

check_reply "assume_yes_for_ask answers the ask" "user=DEFAULT
result=allow
target=personal
target_uuid=uuid:9e7f2c1b-5a4d-4e3f-8b2a-1d0c9e8f7a65
autostart=True
requested_target=personal" "${REQ_ASK}assume_yes_for_ask=yes\n\n"

check_reply "assume_yes_for_ask=no" "$DENY" "${REQ_ASK}assume_yes_for_ask=no\n\n"

check_reply "just_evaluate allow" "result=allow" "${REQ_VAULT}just_evaluate=yes\n\n"

check_reply "just_evaluate ask" "$DENY" "${REQ_ASK}just_evaluate=yes\n\n"
# Under assume_yes_for_ask the ask is answered yes, and only evaluating shows an allow.
check_reply "just_evaluate assumed ask" "result=allow" \
    "${REQ_ASK}just_evaluate=yes\nassume_yes_for_ask=yes\n\n"

check_reply "allow to dom0" "user=DEFAULT
result=allow
target=dom0
autostart=True
requested_target=dom0" 'source=work\nintended_target=dom0\nservice_and_arg=qubes.GetDate\n\n'

check_reply "@default redirected" "user=DEFAULT
result=allow
target=@dispvm:default-dvm
target_uuid=@dispvm:uuid:4c2b8a7e-1f3d-4b6a-9e5c-8d7f6a5b4c32
autostart=True
requested_target=@default" 'source=work\nintended_target=\nservice_and_arg=qubes.OpenInVM+\n\n'

check_reply "requested_source from its relay" "user=DEFAULT
result=allow
target=work
target_uuid=uuid:6f1c0d4e-2a7b-4c38-9a51-3c1e8f0b7d21
autostart=True
requested_target=work
policy_source=remote-vault" "source=sys-relay\n$REQ_BACKUP\n"

check_reply "requested_source from a non-relay" "$DENY" "source=work\n$REQ_BACKUP\n"
check_log "non-relay reason logged" "work is not a relay for remote-vault"

check_reply "upstream's domain_id and process_ident" "$ALLOW_VAULT" \
    "domain_id=5\n${REQ_VAULT}process_ident=SOCKET7\n\n"

# shellcheck disable=SC2059
got=$(printf "$REQ_VAULT" | "$PY" "$WORK/ask.py" "$SOCK" shut)
[ "$got" = "${ALLOW_VAULT}<EOF>" ] && ok || bad "request ended by EOF: $got"

# --- malformed requests: closed without a reply ------------------------------------
check_reply "duplicate key" "" "${REQ_VAULT}source=work\n\n"
check_log "duplicate logged" "duplicate argument source"
check_reply "duplicate optional key" "" "${REQ_VAULT}just_evaluate=no\njust_evaluate=no\n\n"
check_reply "unknown key" "" "${REQ_VAULT}target=vault\n\n"
check_reply "missing key" "" 'source=work\nservice_and_arg=qubes.Filecopy+\n\n'
check_reply "line without =" "" "${REQ_VAULT}nonsense\n\n"
check_reply "bad yes/no" "" "${REQ_VAULT}assume_yes_for_ask=true\n\n"
check_reply "empty request" "" '\n'
# shellcheck disable=SC2059
got=$( { printf "$REQ_VAULT"; printf 'domain_id=%070000d\n\n' 0; } | "$PY" "$WORK/ask.py" "$SOCK")
[ "$got" = "<EOF>" ] && ok || bad "request over 64 KiB answered: ${got:0:80}"

# --- hostile clients do not block others ------------------------------------------
check_reply "answer while 50 clients stall" "$ALLOW_VAULT" "$REQ_VAULT\n"
got=$("$PY" "$WORK/crowd.py" "$SOCK" 50)
[ "$got" = "${ALLOW_VAULT}<EOF>" ] && ok || bad "crowd: $got"
"$PY" "$WORK/stall.py" "$SOCK" >"$WORK/stall.out" &
STALL_PID=$!
check_reply "answer while a client stalls" "$ALLOW_VAULT" "$REQ_VAULT\n"
wait "$STALL_PID"
read -r what secs <"$WORK/stall.out"
if [ "$what" = closed ] && [ "$secs" -ge 1 ] && [ "$secs" -le 6 ]; then ok; else
    bad "stalled client: $what after $secs s (want closed after ~2 s)"
fi
check_log "timeout logged" "timed out"

# --- the policy changes while the daemon runs -------------------------------------
{ echo "qubes.Filecopy * work vault deny notify=no"; cat "$EXAMPLES/policy.d/30-user.policy"; } \
    >"$POLICY/30-user.policy"
check_reply "edited file takes effect" "$DENY" "$REQ_VAULT\n"
check_log "edit reason" "30-user.policy:1"

cp "$EXAMPLES/policy.d/30-user.policy" "$POLICY/.tmp"
mv "$POLICY/.tmp" "$POLICY/30-user.policy"
check_reply "file replaced by rename takes effect" "$ALLOW_VAULT" "$REQ_VAULT\n"

echo "qubes.Filecopy * work vault deny" >"$POLICY/20-first.policy"
check_reply "new file takes effect" "$DENY" "$REQ_VAULT\n"
rm "$POLICY/20-first.policy"
check_reply "removed file takes effect" "$ALLOW_VAULT" "$REQ_VAULT\n"

echo "this is not a rule" >"$POLICY/50-broken.policy"
check_reply "broken policy denies allowed call" "$DENY" "$REQ_VAULT\n"
check_reply "broken policy denies just_evaluate" "$DENY" "${REQ_VAULT}just_evaluate=yes\n\n"
check_log "syntax error logged with FILE:LINE" "$POLICY/50-broken.policy:1: "
rm "$POLICY/50-broken.policy"
check_reply "fixed policy allows again" "$ALLOW_VAULT" "$REQ_VAULT\n"

mkdir "$POLICY/sub"
echo "!include-dir sub" >"$POLICY/10-include.policy"
check_reply "include-dir (empty) keeps the answer" "$ALLOW_VAULT" "$REQ_VAULT\n"
echo "qubes.Filecopy * work vault deny" >"$POLICY/sub/x.policy"
check_reply "file in an included subdirectory takes effect" "$DENY" "$REQ_VAULT\n"
rm -r "$POLICY/sub" "$POLICY/10-include.policy"
check_reply "back to the example policy" "$ALLOW_VAULT" "$REQ_VAULT\n"

# --- the system info changes while the daemon runs -------------------------------
sed -i 's/0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53/0b5d6f3a-9c2e-4d71-8e44-000000000001/' "$SYSINFO"
check_reply "changed system info takes effect" "${ALLOW_VAULT/7a2b1c9d0e53/000000000001}" \
    "$REQ_VAULT\n"
check_log "system info reload logged" "system info reloaded"

# --- exit -----------------------------------------------------------------------------
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
rc=$?
DAEMON_PID=
[ "$rc" = 0 ] && ok || bad "exit status after SIGTERM: $rc"
[ -e "$SOCK" ] && bad "socket left behind" || ok

# A missing system info file is a start-up error.
"$BIN/qrexec-policy-daemon" --socket "$SOCK" --path "$POLICY" --system-info "$WORK/none.json" \
    2>"$WORK/err.log"
rc=$?
[ "$rc" = 1 ] && ok || bad "missing system info: exit $rc"
[ -e "$SOCK" ] && bad "socket created without system info" || ok

# Without --system-info it asks the admin daemon for every request; with no
# admin daemon there, it still serves, and denies with the reason logged.
"$BIN/qrexec-policy-daemon" --socket "$SOCK" --path "$POLICY" \
    --internal-socket "$WORK/no-aeried.sock" 2>"$WORK/err.log" &
DAEMON_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] && ok || bad "live mode: no socket"
check_reply "live mode without an admin daemon denies" "$DENY" "$REQ_VAULT\n"
grep -q "error getting system info: admin daemon at $WORK/no-aeried.sock" "$WORK/err.log" && ok ||
    bad "live mode: reason not logged: $(cat "$WORK/err.log")"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; DAEMON_PID=

echo "policy_daemon: $pass passed, $fail failed"
[ "$fail" = 0 ]
