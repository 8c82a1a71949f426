#!/usr/bin/env bash
# The lifecycle and volume tools (qvm-start, qvm-shutdown, qvm-kill,
# qvm-pause, qvm-unpause, qvm-check, qvm-run, qvm-volume): exact output,
# exit codes and the Admin API requests they send, as Qubes' qubesadmin
# tools give them.
#
# First against fake_qubesd.py (a stand-in daemon that logs every request and
# keeps a small model of power states and volumes), qvm-run against a fake
# qrexec-client that logs its command line; then (as root) against a real
# aeried with qubes that run, made from a host template with qvm-template.
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
FAKE_PID=
DAEMON_PID=
cleanup() {
    # Qubes a failed run left behind go with their daemon's state.
    [ -n "$DAEMON_PID" ] && timeout 60 "$BIN/qvm-shutdown" --all --wait >/dev/null 2>&1
    for pid in $FAKE_PID $DAEMON_PID; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    # The daemon's helpers (qrexec daemons) are known by their folders in
    # $WORK; one that outlived its qube must not outlive the test.
    if [ -n "$DAEMON_PID" ]; then
        for dir in /proc/[0-9]*; do
            case $(tr '\0' ' ' 2>/dev/null <"$dir/cmdline") in
                *"$WORK/"*) kill -9 "${dir#/proc/}" 2>/dev/null ;;
            esac
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
pass=0
fail=0
export COLUMNS=80  # argparse wraps usage at $COLUMNS - 2
EMPTY="Got empty response from qubesd. See journalctl in dom0 for details."
# shellcheck source=check_lib.sh
source "$HERE/check_lib.sh"

# The requests since the last look.
check_requests() {  # NAME TEXT
    check_file "$1: requests" "$WORK/requests" "$2"
}

cat >"$WORK/state.json" <<'EOF'
{"qubes": {
  "dom0": {"class": "AdminVM", "state": "Running"},
  "work": {"class": "AppVM", "state": "Halted",
           "properties": {"netvm": "vm sys-net", "provides_network": "bool False"},
           "volumes": {
             "private": {"info": {"pool": "varlibqubes", "vid": "appvms/work/private", "size": "2147483648",
                                  "usage": "4096", "rw": "True", "source": "",
                                  "path": "/var/lib/qubes/appvms/work/private", "save_on_stop": "True",
                                  "snap_on_start": "False", "revisions_to_keep": "2", "ephemeral": "False",
                                  "is_outdated": "False"},
                         "revisions": ["1700000000-back", "1700000100-back"]},
             "root": {"info": {"pool": "varlibqubes", "vid": "appvms/work/root", "size": "10737418240",
                               "usage": "0", "rw": "False", "source": "vm-templates/fedora/root",
                               "path": "/var/lib/qubes/appvms/work/root", "save_on_stop": "False",
                               "snap_on_start": "True", "revisions_to_keep": "0", "ephemeral": "False",
                               "is_outdated": "True"}}}},
  "sys-net": {"class": "StandaloneVM", "state": "Running", "properties": {"provides_network": "bool True"}},
  "fedora": {"class": "TemplateVM", "state": "Halted",
             "properties": {"provides_network": "bool False", "netvm": "vm "},
             "volumes": {
               "root": {"info": {"pool": "varlibqubes", "vid": "vm-templates/fedora/root", "size": "10737418240",
                                 "usage": "1000", "rw": "True", "source": "",
                                 "path": "/var/lib/qubes/vm-templates/fedora/root", "save_on_stop": "True",
                                 "snap_on_start": "False", "revisions_to_keep": "1", "ephemeral": "False"}}}},
  "stuck": {"class": "AppVM", "state": "Running"},
  "idle": {"class": "AppVM", "state": "Paused"},
  "sys-internal": {"class": "AppVM", "state": "Paused", "features": {"internal": "1"}}
 },
 "replies": {"sys-net admin.vm.Pause": "2\u0000QubesException\u0000\u0000Pausing sys-net is not allowed\u0000",
             "broken admin.vm.volume.Info+root": "0\u0000pool=varlibqubes\nvid=broken/root\npath=/usr/share\n"},
 "stuck": ["stuck"], "shutdown_delay": 0.3}
EOF
sed -i "s|\"shutdown_delay\": 0.3}|\"shutdown_delay\": 0.3, \"pool_dir\": \"$WORK/pool\"}|" "$WORK/state.json"
python3 "$HERE/fake_qubesd.py" --socket "$WORK/fake.sock" --log "$WORK/requests" \
    --state "$WORK/state.json" --replies "$WORK/replies.json" >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
if ! wait_for_socket "$WORK/fake.sock" "$FAKE_PID"; then
    echo "FAIL: the fake daemon did not start"
    cat "$WORK/fake.log"
    exit 1
fi
export QUBESD_SOCKET=$WORK/fake.sock
: >"$WORK/requests"

# --- qvm-start -----------------------------------------------------------------
check "start" 0 "" -- "$BIN/qvm-start" work
check_requests "start" "dom0 admin.vm.List
work admin.vm.CurrentState
work admin.vm.Start"
check "start a running qube" 1 "" -- "$BIN/qvm-start" work
check_stderr_is "start a running qube: message" "Error: domain work is already running"
: >"$WORK/requests"
check "start --skip-if-running" 0 "" -- "$BIN/qvm-start" --skip-if-running work fedora
check_requests "start --skip-if-running" "dom0 admin.vm.List
fedora admin.vm.CurrentState
fedora admin.vm.Start
work admin.vm.CurrentState"
check "start the AdminVM (refused)" 1 "" -- "$BIN/qvm-start" dom0
check_stderr_is "start the AdminVM: message" "Error: domain dom0 is already running"
check "start: an unknown qube" 2 "" -- "$BIN/qvm-start" nosuch
check_stderr_is "start: an unknown qube: message" "usage: qvm-start [--verbose] [--quiet] [--help] [--all] [--exclude EXCLUDE]
                 [--skip-if-running]
                 [VMNAME ...]
qvm-start: error: no such domain: 'nosuch'"
check "start: no qube" 2 "" -- "$BIN/qvm-start"
check_stderr_is "start: no qube: message" "usage: qvm-start [--verbose] [--quiet] [--help] [--all] [--exclude EXCLUDE]
                 [--skip-if-running]
                 [VMNAME ...]
qvm-start: error: one of the arguments --all VMNAME is required"
check "start: --all with a name" 2 "" -- "$BIN/qvm-start" --all work
check_stderr_is "start: --all with a name: message" "usage: qvm-start [--verbose] [--quiet] [--help] [--all] [--exclude EXCLUDE]
                 [--skip-if-running]
                 [VMNAME ...]
qvm-start: error: argument VMNAME: not allowed with argument --all"
check "start: --exclude without --all" 2 "" -- "$BIN/qvm-start" --exclude work fedora
check_stderr_is "start: --exclude without --all: message" "usage: qvm-start [--verbose] [--quiet] [--help] [--all] [--exclude EXCLUDE]
                 [--skip-if-running]
                 [VMNAME ...]
qvm-start: error: --exclude can only be used with --all"
: >"$WORK/requests"
check "start --all: the first running one ends it" 1 "" -- "$BIN/qvm-start" --all --exclude dom0
check_stderr_is "start --all: message" "Error: domain fedora is already running"

# --- qvm-check -----------------------------------------------------------------
check "check: exists" 0 "" -- "$BIN/qvm-check" work fedora
check_stderr_is "check: exists: log" "qvm-check: fedora: exists
qvm-check: work: exists"
check "check -q: exists, silently" 0 "" -- "$BIN/qvm-check" -q work
check_stderr_is "check -q: nothing said" ""
check "check: one name unknown" 1 "" -- "$BIN/qvm-check" work nosuch aaa
check_stderr_is "check: one name unknown: log" "qvm-check: work: exists
qvm-check: aaa: non-existent!
qvm-check: nosuch: non-existent!"
check "check -q: unknown names still warned" 1 "" -- "$BIN/qvm-check" -q nosuch
check_stderr_is "check -q: warning without the logger's name" "nosuch: non-existent!"
: >"$WORK/requests"
check "check --running: all" 0 "" -- "$BIN/qvm-check" --running work fedora idle stuck
check_stderr_is "check --running: all: log" "qvm-check: fedora: running
qvm-check: idle: running
qvm-check: stuck: running
qvm-check: work: running"
check_requests "check --running" "dom0 admin.vm.List
fedora admin.vm.CurrentState
idle admin.vm.CurrentState
stuck admin.vm.CurrentState
work admin.vm.CurrentState"
check "check --paused: none" 1 "" -- "$BIN/qvm-check" --paused work
check_stderr_is "check --paused: none: log" "qvm-check: None of qubes: paused"
check "check --paused --running" 3 "" -- "$BIN/qvm-check" --paused --running idle work
check_stderr_is "check --paused --running: log" "qvm-check: idle: running, paused"
check "check --template" 0 "" -- "$BIN/qvm-check" --template fedora
check_stderr_is "check --template: log" "qvm-check: fedora: template"
check "check --networked --all" 3 "" -- "$BIN/qvm-check" --networked --all
check_stderr_is "check --networked --all: log" "qvm-check: sys-net: networked
qvm-check: work: networked"
: >"$WORK/requests"

# --- qvm-pause / qvm-unpause ---------------------------------------------------
check "pause" 0 "" -- "$BIN/qvm-pause" work
check_requests "pause" "dom0 admin.vm.List
work admin.vm.Pause"
check "pause: refused for one, the others paused" 1 "" -- "$BIN/qvm-pause" sys-net stuck fedora
check_stderr_is "pause: refused: message" "Error: Pausing sys-net is not allowed"
check "pause: an unknown qube" 2 "" -- "$BIN/qvm-pause" --suspend nosuch
check_stderr_is "pause: unknown" "usage: qvm-pause [--verbose] [--quiet] [--help] [--all] [--exclude EXCLUDE]
                 [--suspend]
                 [VMNAME ...]
qvm-pause: error: no such domain: 'nosuch'"
: >"$WORK/requests"
check "unpause --all: internal qubes left out" 1 "" -- "$BIN/qvm-unpause" --all
check_requests "unpause --all" "dom0 admin.vm.List
fedora admin.vm.feature.Get+internal
idle admin.vm.feature.Get+internal
stuck admin.vm.feature.Get+internal
sys-internal admin.vm.feature.Get+internal
sys-net admin.vm.feature.Get+internal
work admin.vm.feature.Get+internal
fedora admin.vm.CurrentState
fedora admin.vm.Unpause
idle admin.vm.CurrentState
idle admin.vm.Unpause
stuck admin.vm.CurrentState
stuck admin.vm.Unpause
sys-net admin.vm.CurrentState
sys-net admin.vm.Unpause
work admin.vm.CurrentState
work admin.vm.Unpause"
check_stderr_is "unpause --all: the one not paused" "Error: Domain is not paused: 'sys-net'"
check "check: sys-internal still paused" 0 "" -- "$BIN/qvm-check" -q --paused sys-internal
check "unpause a running qube" 1 "" -- "$BIN/qvm-unpause" work
check_stderr_is "unpause a running qube: message" "Error: Domain is not paused: 'work'"

# --- qvm-kill ------------------------------------------------------------------
: >"$WORK/requests"
check "kill, one of them halted already" 0 "" -- "$BIN/qvm-kill" idle work
check_requests "kill" "dom0 admin.vm.List
idle admin.vm.Kill
work admin.vm.Kill"
check "kill a halted qube: no error" 0 "" -- "$BIN/qvm-kill" work
check "kill the AdminVM" 1 "" -- "$BIN/qvm-kill" dom0
check_stderr_is "kill the AdminVM: message" "Error: Failed to kill 'dom0': Cannot kill Dom0 fake domain!"

# --- qvm-shutdown --------------------------------------------------------------
"$BIN/qvm-start" work idle 2>/dev/null
: >"$WORK/requests"
check "shutdown" 0 "" -- "$BIN/qvm-shutdown" work
check_requests "shutdown" "dom0 admin.vm.List
work admin.vm.Shutdown"
check "shutdown a halted qube: no error" 0 "" -- "$BIN/qvm-shutdown" fedora work
: >"$WORK/requests"
check "shutdown --wait" 0 "" -- "$BIN/qvm-shutdown" --wait idle
check_requests "shutdown --wait" "dom0 admin.vm.List
idle admin.vm.Shutdown
dom0 admin.Events
idle admin.vm.CurrentState
idle admin.vm.CurrentState"
check "check: idle halted" 1 "" -- "$BIN/qvm-check" -q --running idle
"$BIN/qvm-start" work idle 2>/dev/null
: >"$WORK/requests"
check "shutdown --wait --force --timeout: the stuck one killed" 0 "" -- \
    "$BIN/qvm-shutdown" --wait --force --timeout 1.5 stuck work
check_requests "shutdown --wait --timeout" "dom0 admin.vm.List
stuck admin.vm.Shutdown+force
work admin.vm.Shutdown+force
dom0 admin.Events
stuck admin.vm.CurrentState
work admin.vm.CurrentState
stuck admin.vm.Kill
work admin.vm.Kill
stuck admin.vm.CurrentState
work admin.vm.CurrentState"
check "shutdown --dry-run" 0 "" -- "$BIN/qvm-shutdown" --dry-run idle
check_requests "shutdown --dry-run" "dom0 admin.vm.List"
check "shutdown --dry-run --wait: not halted" 1 "" -- "$BIN/qvm-shutdown" --dry-run --wait --timeout 0.3 idle
check_stderr_is "shutdown --dry-run --wait: message" "qvm-shutdown: error: Failed to shut down: idle"
: >"$WORK/requests"
check "shutdown --all: forced" 0 "" -- "$BIN/qvm-shutdown" --all --exclude sys-net --exclude sys-internal
check_requests "shutdown --all" "dom0 admin.vm.List
fedora admin.vm.Shutdown+force
idle admin.vm.Shutdown+force
stuck admin.vm.Shutdown+force
work admin.vm.Shutdown+force"
check "shutdown --wait: one that does not stop is killed" 0 "" -- "$BIN/qvm-shutdown" --wait --timeout 0.5 stuck
check "check --running: some" 3 "" -- "$BIN/qvm-check" --running work sys-net
check_stderr_is "check --running: some: log" "qvm-check: sys-net: running"
check "check --running: none" 1 "" -- "$BIN/qvm-check" --running work stuck
check_stderr_is "check --running: none: log" "qvm-check: None of qubes: running"
"$BIN/qvm-start" work
echo '{"dom0 admin.Events": null}' >"$WORK/replies.json"
: >"$WORK/requests"
check "shutdown --wait: no event stream, power states polled" 0 "" -- "$BIN/qvm-shutdown" --wait work
check_stderr_is "shutdown --wait, polled: log" "app: Waiting for shutdown (60): work"
check_requests "shutdown --wait, polled" "dom0 admin.vm.List
work admin.vm.Shutdown
dom0 admin.Events
work admin.vm.CurrentState
work admin.vm.CurrentState
work admin.vm.CurrentState"
"$BIN/qvm-start" stuck
check "shutdown --wait, polled: killed after the timeout" 0 "" -- "$BIN/qvm-shutdown" --wait --timeout 1 stuck
check_stderr_is "shutdown --wait, polled, killed: log" "app: Waiting for shutdown (1.0): stuck
app: Waiting for shutdown (0.0): stuck
app: Killing remaining qubes: stuck"
rm "$WORK/replies.json"
check "shutdown --timeout x" 2 "" -- "$BIN/qvm-shutdown" --timeout x work
check_stderr_is "shutdown --timeout x: message" "usage: qvm-shutdown [--verbose] [--quiet] [--help] [--all] [--exclude EXCLUDE]
                    [--wait] [--timeout TIMEOUT] [--force] [--dry-run]
                    [VMNAME ...]
qvm-shutdown: error: argument --timeout: invalid float value: 'x'"

# --- qvm-run -------------------------------------------------------------------
# qvm-run calls the qrexec-client next to it: a copy of it, next to a fake
# that logs its command line and input.
mkdir "$WORK/runbin"
cp "$BIN/qvm-run" "$WORK/runbin/"
cat >"$WORK/runbin/qrexec-client" <<'END'
#!/bin/bash
printf '%s\n' "$*" >>"$FAKE_QREXEC_LOG"
input=$(cat)
[ -z "$input" ] || printf 'stdin: %s\n' "$input" >>"$FAKE_QREXEC_LOG"
printf 'out \033[31mred\033[0m\n'
printf 'err \033]0;title\007\n' >&2
exit "${FAKE_RC:-0}"
END
chmod +x "$WORK/runbin/qrexec-client"
export FAKE_QREXEC_LOG=$WORK/qrexec-client.log QREXEC_SOCKET_DIR=$WORK/qrexec
: >"$FAKE_QREXEC_LOG"
RUN=$WORK/runbin/qvm-run
SD="--socket-dir=$WORK/qrexec"
RUN_USAGE="usage: qvm-run [--verbose] [--quiet] [--help] [--user USER] [--autostart]
               [--no-autostart] [--pass-io] [--localcmd COMMAND] [--gui]
               [--no-gui] [--colour-output COLOUR] [--colour-stderr COLOUR]
               [--no-colour-output] [--no-colour-stderr]
               [--filter-escape-chars] [--no-filter-escape-chars] [--service]
               [--no-shell] [--dispvm [BASE_APPVM] | --all]
               [--exclude EXCLUDE]
               [VMNAME] COMMAND ..."
REMOTE_OUT=$(printf 'out \033[31mred\033[0m')
: >"$WORK/requests"
check "run: starts the qube, output discarded" 0 "" -- "$RUN" work 'echo hi'
check_stderr_is "run: message" "Running 'echo hi' on work"
check_requests "run" "dom0 admin.vm.List
work admin.vm.CurrentState
work admin.vm.Start"
check_file "run: qrexec-client" "$FAKE_QREXEC_LOG" "$SD -d work DEFAULT:echo hi"
check "run -q: no message" 0 "" -- "$RUN" -q work 'echo hi'
check_stderr_is "run -q: message" ""
: >"$FAKE_QREXEC_LOG"
STDIN=$WORK/state.json check "run -p: stdio passed" 0 "$REMOTE_OUT" -- "$RUN" -p work cat
check_stderr_is "run -p: remote stderr" "$(printf 'err \033]0;title\007')"
check_file "run -p: qrexec-client" "$FAKE_QREXEC_LOG" "$SD -d work DEFAULT:cat
stdin: $(cat "$WORK/state.json")"
FAKE_RC=3 check "run -p: the remote exit code" 3 "$REMOTE_OUT" -- "$RUN" -p work false
check_stderr_is "run -p: no message" "$(printf 'err \033]0;title\007')"
FAKE_RC=3 check "run: the remote exit code" 3 "" -- "$RUN" work false
check_stderr_is "run: failure reported" "Running 'false' on work
work: command failed with code: 3"
: >"$FAKE_QREXEC_LOG"
check "run -p --filter-escape-chars: filtered, coloured" 0 "$(printf '\033[0;31mout _[31mred_[0m\n\033[0m')" -- \
    "$RUN" -p --filter-escape-chars work x
check_stderr_is "run -p --filter-escape-chars: stderr filtered" "$(printf 'err _]0;title\007')"
check "run -p --filter-escape-chars --no-colour-output" 0 "out _[31mred_[0m" -- \
    "$RUN" -p --filter-escape-chars --no-colour-output work x
check_file "run -p --filter-escape-chars: qrexec-client" "$FAKE_QREXEC_LOG" "$SD -d work -t -T DEFAULT:x
$SD -d work -t -T DEFAULT:x"
check "run --colour-output without filtering" 2 "" -- "$RUN" --colour-output 32 --no-filter-escape-chars work x
check_stderr_is "run --colour-output without filtering: message" "$RUN_USAGE
qvm-run: error: --color-output must be used with --filter-escape-chars"
check "run --service: only started" 0 "" -- "$RUN" --service work qubes.Filecopy+x
check "run --service -p" 0 "$REMOTE_OUT" -- "$RUN" --service -p -u user work qubes.Echo
check "run: a command with arguments" 0 "" -- "$RUN" -u root work ls -l "a b" "it's" --all
check "run --no-shell" 0 "" -- "$RUN" --no-shell -a work 'my prog'
check "run: options before the command, -- ending them" 0 "" -- "$RUN" work -q -- -x
check_file "run: qrexec-client command lines" "$FAKE_QREXEC_LOG" "$SD -d work -e DEFAULT:QUBESRPC qubes.Filecopy+x dom0
$SD -d work user:QUBESRPC qubes.Echo dom0
$SD -d work root:ls -l 'a b' 'it'\"'\"'s' --all
$SD -d work DEFAULT:'my prog'
$SD -d work DEFAULT:-x"
check "run --localcmd" 0 "" -- "$RUN" -p --localcmd "echo local-says; exec cat >$WORK/local.out" work prog
check_file "run --localcmd: remote output to the local program" "$WORK/local.out" "$REMOTE_OUT"
check_file "run --localcmd: local output to the remote command" "$FAKE_QREXEC_LOG" "$SD -d work DEFAULT:prog
stdin: local-says"
: >"$WORK/requests"
check "run --no-autostart: a halted qube" 1 "" -- "$RUN" --no-autostart fedora ls
check_stderr_is "run --no-autostart: message" "Qube 'fedora' not started"
check_requests "run --no-autostart" "dom0 admin.vm.List
fedora admin.vm.CurrentState"
"$BIN/qvm-start" idle && "$BIN/qvm-pause" idle
check "run -n: a paused qube" 1 "" -- "$RUN" -n idle ls
check_stderr_is "run -n: a paused qube: message" "Qube 'idle' is paused"
: >"$WORK/requests"
check "run: a paused qube is unpaused" 0 "" -- "$RUN" idle ls
check_requests "run: unpause" "dom0 admin.vm.List
idle admin.vm.CurrentState
idle admin.vm.Unpause
idle admin.vm.Start"
"$BIN/qvm-pause" idle
: >"$FAKE_QREXEC_LOG"
check "run --all: running qubes only" 0 "" -- "$RUN" --all --exclude sys-net uname
check_stderr_is "run --all: messages" "Running 'uname' on work"
check_file "run --all: qrexec-client" "$FAKE_QREXEC_LOG" "$SD -d work DEFAULT:uname"
check "run --all -p" 2 "" -- "$RUN" --all -p uname
check_stderr_is "run --all -p: message" "$RUN_USAGE
qvm-run: error: --passio cannot be used when more than 1 qube is chosen and no --localcmd is used"
check "run --localcmd without -p" 2 "" -- "$RUN" --localcmd cat work x
check_stderr_is "run --localcmd without -p: message" "$RUN_USAGE
qvm-run: error: --localcmd have no effect without --pass-io"
check "run --service --no-shell" 2 "" -- "$RUN" --service --no-shell work x
check_stderr_is "run --service --no-shell: message" "$RUN_USAGE
qvm-run: error: --no-shell does not apply to --service"
check "run --dispvm WORD: the word is the template" 2 "" -- "$RUN" --dispvm xterm
check_stderr_is "run --dispvm WORD: message" "$RUN_USAGE
qvm-run: error: the following arguments are required: COMMAND, ARG"
check "run --dispvm --all" 2 "" -- "$RUN" --dispvm --all xterm
check_stderr_is "run --dispvm --all: message" "$RUN_USAGE
qvm-run: error: argument --all: not allowed with argument --dispvm"
check "run: no command" 2 "" -- "$RUN" work
check_stderr_is "run: no command: message" "$RUN_USAGE
qvm-run: error: the following arguments are required: COMMAND"
check "run: nothing" 2 "" -- "$RUN"
check_stderr_is "run: nothing: message" "$RUN_USAGE
qvm-run: error: the following arguments are required: COMMAND, ARG"
check "run: an unknown qube" 2 "" -- "$RUN" nosuch ls
check_stderr_is "run: an unknown qube: message" "$RUN_USAGE
qvm-run: error: no such domain: 'nosuch'"
check "run: an unknown option" 2 "" -- "$RUN" --bogus work ls
check_stderr_is "run: an unknown option: message" "$RUN_USAGE
qvm-run: error: unrecognized arguments: --bogus"
check "run: --user without its value" 2 "" -- "$RUN" --user
check_stderr_is "run: --user without its value: message" "$RUN_USAGE
qvm-run: error: argument --user/-u: expected one argument"
check "run: a start that fails" 255 "" -- "$RUN" dom0 ls
check_stderr_is "run: a start that fails: message" "Running 'ls' on dom0
dom0: Cannot start Dom0 fake domain!"

# --- qvm-volume ----------------------------------------------------------------
: >"$WORK/requests"
check "volume: list (the default)" 0 "POOL:VOLUME                           VMNAME  VOLUME_NAME  REVERT_POSSIBLE
varlibqubes:appvms/work/private       work    private      Yes
varlibqubes:appvms/work/root          work    root         No
varlibqubes:vm-templates/fedora/root  fedora  root         No" -- "$BIN/qvm-volume"
check "volume ls VMNAME" 0 "POOL:VOLUME                      VMNAME  VOLUME_NAME  REVERT_POSSIBLE
varlibqubes:appvms/work/private  work    private      Yes
varlibqubes:appvms/work/root     work    root         No" -- "$BIN/qvm-volume" ls work
check "volume list --all --exclude" 0 "POOL:VOLUME                           VMNAME  VOLUME_NAME  REVERT_POSSIBLE
varlibqubes:vm-templates/fedora/root  fedora  root         No" -- "$BIN/qvm-volume" list --all --exclude work
check "volume list: --all with a name" 2 "" -- "$BIN/qvm-volume" list --all work
check_stderr_is "volume list: --all with a name: message" "usage: qvm-volume list [--verbose] [--quiet] [--help] [-p POOL_NAME] [--full]
                       [--all] [--exclude EXCLUDE]
                       [VMNAME ...]
qvm-volume list: error: argument VMNAME: not allowed with argument --all"
: >"$WORK/requests"
check "volume info" 0 "pool               varlibqubes
vid                appvms/work/private
rw                 True
source             
save_on_stop       True
snap_on_start      False
size               2147483648
usage              4096
revisions_to_keep  2
ephemeral          False
is_outdated        False
List of available revisions (for revert):
  1700000000-back
  1700000100-back" -- "$BIN/qvm-volume" info work:private
check "volume info: no revisions" 0 "pool               varlibqubes
vid                vm-templates/fedora/root
rw                 True
source             
save_on_stop       True
snap_on_start      False
size               10737418240
usage              1000
revisions_to_keep  1
ephemeral          False
is_outdated        False
List of available revisions (for revert): none" -- "$BIN/qvm-volume" i fedora:root
check "volume info PROPERTY" 0 "vm-templates/fedora/root" -- "$BIN/qvm-volume" info work:root source
check "volume info is_outdated" 0 "True" -- "$BIN/qvm-volume" info work:root is_outdated
check "volume info revisions" 0 "1700000000-back
1700000100-back" -- "$BIN/qvm-volume" info work:private revisions
check "volume info: an unknown property" 1 "" -- "$BIN/qvm-volume" info work:private colour
check_stderr_is "volume info: an unknown property: message" "Error: No such property: colour"
: >"$WORK/requests"
check "volume revert: the newest" 0 "" -- "$BIN/qvm-volume" revert work:private
check "volume revert REVISION" 0 "" -- "$BIN/qvm-volume" rv work:private 1700000000-back
check_requests "volume revert" "dom0 admin.vm.List
work admin.vm.volume.List
work admin.vm.volume.ListSnapshots+private
work admin.vm.volume.Revert+private 1700000100-back
dom0 admin.vm.List
work admin.vm.volume.List
work admin.vm.volume.Revert+private 1700000000-back"
check "volume revert: nothing to revert to" 1 "" -- "$BIN/qvm-volume" revert work:root
check_stderr_is "volume revert: nothing: message" "Error: No snapshots available"
check "volume revert: refused" 1 "" -- "$BIN/qvm-volume" revert work:private nosuch
check_stderr_is "volume revert: refused: message" "Error: $EMPTY"
: >"$WORK/requests"
check "volume config revisions_to_keep" 0 "" -- "$BIN/qvm-volume" config work:private revisions_to_keep 5
check "volume set rw" 0 "" -- "$BIN/qvm-volume" set work:private rw False
check_requests "volume config" "dom0 admin.vm.List
work admin.vm.volume.List
work admin.vm.volume.Set.revisions_to_keep+private 5
dom0 admin.vm.List
work admin.vm.volume.List
work admin.vm.volume.Set.rw+private False"
check "volume config: not a setting" 1 "" -- "$BIN/qvm-volume" config work:private size 1
check_stderr_is "volume config: not a setting: message" "Error: Invalid property: size"
: >"$WORK/requests"
check "volume resize" 0 "" -- "$BIN/qvm-volume" resize work:private 3GiB
check_requests "volume resize" "dom0 admin.vm.List
work admin.vm.volume.List
work admin.vm.volume.Info+private
work admin.vm.volume.Resize+private 3221225472"
check "volume extend: shrinking refused" 1 "" -- "$BIN/qvm-volume" extend work:private 1G
check_stderr_is "volume extend: shrinking: message" "Error: For your own safety, shrinking of private is disabled (1000000000 < 3221225472). If you really know what you are doing, resize filesystem manually first, then use \`-f\` option."
check "volume resize -f: shrinking" 0 "" -- "$BIN/qvm-volume" resize -f work:private 1G
check "volume resize: a bad size" 1 "" -- "$BIN/qvm-volume" resize work:private 2x
check_stderr_is "volume resize: a bad size: message" "Error: Invalid size: 2X."
check "volume: an unknown command" 2 "" -- "$BIN/qvm-volume" frob
check_stderr_is "volume: an unknown command: message" "usage: qvm-volume [--verbose] [--quiet] [--help]
                  {info,i,config,c,set,s,resize,extend,list,ls,l,revert,rv,r}
                  ...
qvm-volume: error: argument command: invalid choice: 'frob' (choose from 'info', 'i', 'config', 'c', 'set', 's', 'resize', 'extend', 'list', 'ls', 'l', 'revert', 'rv', 'r')"
check "volume info: no volume named" 2 "" -- "$BIN/qvm-volume" info
check_stderr_is "volume info: no volume named: message" "usage: qvm-volume info [--verbose] [--quiet] [--help] VM:VOLUME [property]
qvm-volume info: error: the following arguments are required: VM:VOLUME"
check "volume info: not VM:VOLUME" 2 "" -- "$BIN/qvm-volume" info work
check "volume info: no such qube" 1 "" -- "$BIN/qvm-volume" info nosuch:private
check_stderr_is "volume info: no such qube: message" "qvm-volume: error: no vm 'nosuch'"
check "volume info: no such volume" 1 "" -- "$BIN/qvm-volume" info work:swap
check_stderr_is "volume info: no such volume: message" "qvm-volume: error: vm 'work' has no volume 'swap'"
check "volume info: too many words" 2 "" -- "$BIN/qvm-volume" info work:private size extra
check_stderr_is "volume info: too many words: message" "usage: qvm-volume [--verbose] [--quiet] [--help]
                  {info,i,config,c,set,s,resize,extend,list,ls,l,revert,rv,r}
                  ...
qvm-volume: error: unrecognized arguments: extra"
check "volume: an unknown option before the command" 2 "" -- "$BIN/qvm-volume" --bogus list
check_stderr_is "volume: an unknown option: message" "usage: qvm-volume [--verbose] [--quiet] [--help]
                  {info,i,config,c,set,s,resize,extend,list,ls,l,revert,rv,r}
                  ...
qvm-volume: error: unrecognized arguments: --bogus"
check "volume config: missing value" 2 "" -- "$BIN/qvm-volume" config work:private rw
check_stderr_is "volume config: missing value: message" "usage: qvm-volume config [--verbose] [--quiet] [--help]
                         VM:VOLUME property value
qvm-volume config: error: the following arguments are required: value"

# --- qvm-template --------------------------------------------------------------
: >"$WORK/requests"
check "template create-from-host" 0 "" -- "$BIN/qvm-template" create-from-host tpl
[ -f "$WORK/pool/tpl/root/etc/aerie-host-template" ] && [ -L "$WORK/pool/tpl/root/bin" ]
check "template create-from-host: a host template in the root volume" 0 "" -- test $? = 0
sed -i 's/ [0-9-]\{10\} [0-9:]\{8\}$/ TIME/' "$WORK/requests"
check_requests "template create-from-host" "dom0 admin.vm.List
dom0 admin.vm.Create.TemplateVM name=tpl label=black
tpl admin.vm.volume.Info+root
tpl admin.vm.feature.Set+template-name tpl
tpl admin.vm.feature.Set+template-reponame @host
tpl admin.vm.feature.Set+template-buildtime TIME
tpl admin.vm.feature.Set+template-installtime TIME
tpl admin.vm.feature.Set+template-summary The host's system
tpl admin.vm.feature.Set+os Linux
tpl admin.vm.feature.Set+qrexec 1
tpl admin.vm.feature.Set+vmexec 1
tpl admin.vm.feature.Set+supported-rpc.qubes.VMShell 1
tpl admin.vm.feature.Set+supported-rpc.qubes.VMRootShell 1
tpl admin.vm.feature.Set+supported-rpc.qubes.VMExec 1
tpl admin.vm.feature.Set+supported-rpc.qubes.VMRootExec 1
tpl admin.vm.feature.Set+supported-rpc.qubes.VMExecGUI 1
tpl admin.vm.feature.Set+supported-rpc.qubes.GetDate 1
tpl admin.vm.feature.Set+supported-rpc.qubes.WaitForSession 1
tpl admin.vm.feature.Set+supported-rpc.qubes.OpenURL 1
tpl admin.vm.feature.Set+supported-rpc.qubes.OpenInVM 1"
check "template: the name taken" 1 "" -- "$BIN/qvm-template" create-from-host tpl
check_stderr_is "template: the name taken: message" "qvm-template: error: Template 'tpl' already installed"
: >"$WORK/requests"
check "template: a root volume not empty" 1 "" -- "$BIN/qvm-template" create-from-host broken
check_stderr_is "template: a root volume not empty: message" "qvm-template: error: the root volume is not empty: /usr/share"
check_requests "template: a root volume not empty" "dom0 admin.vm.List
dom0 admin.vm.Create.TemplateVM name=broken label=black
broken admin.vm.volume.Info+root
broken admin.vm.Remove"
check "template create-from-debootstrap: failed, removed again" 1 "" -- \
    "$BIN/qvm-template" create-from-debootstrap --suite bookworm --mirror http://127.0.0.1:9/debian deb
grep -q "^qvm-template: error: " "$WORK/stderr"
check "template create-from-debootstrap: failure reported" 0 "" -- test $? = 0
check "template create-from-debootstrap: no qube left" 1 "" -- "$BIN/qvm-check" -q deb
[ ! -e "$WORK/pool/deb" ]
check "template create-from-debootstrap: no folder left" 0 "" -- test $? = 0
check "template: an unknown command" 2 "" -- "$BIN/qvm-template" install fedora
check_stderr_is "template: an unknown command: message" "usage: qvm-template [--verbose] [--quiet] [--help]
                    {create-from-host,create-from-debootstrap} ...
qvm-template: error: argument command: invalid choice: 'install' (choose from 'create-from-host', 'create-from-debootstrap')"
check "template: no name" 2 "" -- "$BIN/qvm-template" create-from-debootstrap --suite trixie
check_stderr_is "template: no name: message" "usage: qvm-template create-from-debootstrap [--verbose] [--quiet] [--help]
                                            [--suite SUITE] [--mirror MIRROR]
                                            NAME
qvm-template create-from-debootstrap: error: the following arguments are required: NAME"
check "template: --suite without its value" 2 "" -- "$BIN/qvm-template" create-from-debootstrap deb --suite
check "template: --suite for the host" 2 "" -- "$BIN/qvm-template" create-from-host --suite bookworm x

# === Against a real aeried: qubes that run =====================================
# Needs root (the ns backend's namespaces, cgroups and mounts). The qubes'
# names are the test's own: the backend's cgroups are named after qubes, and
# other tests' daemons may run qubes at the same time.
if [ "$(id -u)" != 0 ]; then
    echo "qvm lifecycle tools: the real-daemon part needs root; skipped"
else
    kill "$FAKE_PID" 2>/dev/null
    wait "$FAKE_PID" 2>/dev/null
    FAKE_PID=
    REAL=$WORK/real
    mkdir -p "$REAL"
    "$BIN/aeried" --state-dir "$REAL/state" --socket "$REAL/qubesd.sock" \
        --internal-socket "$REAL/qubesd.internal.sock" --runtime-dir "$REAL/run" \
        --qrexec-socket-dir "$REAL/qrexec" --policy-socket "$REAL/policy.sock" >"$REAL/aeried.log" 2>&1 &
    DAEMON_PID=$!
    if ! wait_for_socket "$REAL/qubesd.sock" "$DAEMON_PID"; then
        echo "FAIL: aeried did not start"
        cat "$REAL/aeried.log"
        exit 1
    fi
    export QUBESD_SOCKET=$REAL/qubesd.sock QREXEC_SOCKET_DIR=$REAL/qrexec
    T="timeout 60"

    check "real: template from the host" 0 "" -- "$BIN/qvm-template" create-from-host lc-tpl
    check "real: its source" 0 "@host" -- "$BIN/qvm-features" lc-tpl template-reponame
    "$BIN/qvm-create" -t lc-tpl -l red lc-work && "$BIN/qvm-create" -t lc-tpl -l blue lc-other
    check "real: check --running before start" 1 "" -- "$BIN/qvm-check" --running lc-work
    check_stderr_is "real: check --running before start: log" "qvm-check: None of qubes: running"
    check "real: start" 0 "" -- $T "$BIN/qvm-start" lc-work
    check "real: check --running" 0 "" -- "$BIN/qvm-check" --running lc-work
    check "real: start again" 1 "" -- $T "$BIN/qvm-start" lc-work
    check_stderr_is "real: start again: message" "Error: domain lc-work is already running"
    check "real: start --skip-if-running" 0 "" -- $T "$BIN/qvm-start" --skip-if-running lc-work

    check "real: run -p" 0 "hello
lc-work" -- $T "$BIN/qvm-run" -p -u root lc-work 'echo hello; hostname'
    check "real: run -p: the default user" 0 "user" -- $T "$BIN/qvm-run" -p lc-work 'id -un'
    check "real: run -p: the remote exit code" 7 "" -- $T "$BIN/qvm-run" -p -u root lc-work 'exit 7'
    STDIN=$WORK/state.json check "real: run -p: stdin" 0 "$(cat "$WORK/state.json")" -- \
        $T "$BIN/qvm-run" -p -u root lc-work cat
    check "real: run -p: arguments quoted" 0 "a b|it's" -- $T "$BIN/qvm-run" -p -u root lc-work printf '%s|%s' "a b" "it's"
    check "real: run without -p" 3 "" -- $T "$BIN/qvm-run" -u root lc-work 'echo discarded; exit 3'
    check_stderr_is "real: run without -p: messages" "Running 'echo discarded; exit 3' on lc-work
lc-work: command failed with code: 3"
    check "real: run starts a halted qube" 0 "started" -- $T "$BIN/qvm-run" -p -u root lc-other 'echo started'
    check "real: both running" 0 "" -- "$BIN/qvm-check" -q --running lc-work lc-other

    check "real: pause" 0 "" -- "$BIN/qvm-pause" lc-work
    check "real: check --paused" 0 "" -- "$BIN/qvm-check" -q --paused lc-work
    check "real: run -n on a paused qube" 1 "" -- $T "$BIN/qvm-run" -n -u root lc-work true
    check_stderr_is "real: run -n on a paused qube: message" "Qube 'lc-work' is paused"
    check "real: pause again" 1 "" -- "$BIN/qvm-pause" lc-work
    check_stderr_is "real: pause again: message" "Error: Domain not running (either powered off or paused): 'lc-work'"
    check "real: unpause" 0 "" -- "$BIN/qvm-unpause" lc-work
    check "real: running again" 0 "back" -- $T "$BIN/qvm-run" -p -u root lc-work 'echo back'
    "$BIN/qvm-pause" lc-work
    check "real: run unpauses a paused qube" 0 "unpaused" -- $T "$BIN/qvm-run" -p -u root lc-work 'echo unpaused'
    check "real: unpause a running qube" 1 "" -- "$BIN/qvm-unpause" lc-work
    check_stderr_is "real: unpause a running qube: message" "Error: Domain is not paused: 'lc-work'"

    check "real: kill" 0 "" -- $T "$BIN/qvm-kill" lc-other
    check "real: killed" 1 "" -- "$BIN/qvm-check" -q --running lc-other
    check "real: kill a halted qube" 0 "" -- $T "$BIN/qvm-kill" lc-other
    check "real: shutdown --wait" 0 "" -- $T "$BIN/qvm-shutdown" --wait lc-work
    check "real: halted" 0 "lc-work|Halted" -- "$BIN/qvm-ls" --raw-data --fields name,state lc-work
    check "real: shutdown --wait of a halted qube" 0 "" -- $T "$BIN/qvm-shutdown" --wait lc-work

    # The private volume: a revision kept at each stop, a revert to the last
    # one. (A second between stops: revisions are named after the second
    # they were saved in.)
    check "real: volume config" 0 "" -- "$BIN/qvm-volume" config lc-work:private revisions_to_keep 2
    check "real: volume info PROPERTY" 0 "2" -- "$BIN/qvm-volume" info lc-work:private revisions_to_keep
    sleep 1.1
    $T "$BIN/qvm-run" -p -u root lc-work 'echo one > /rw/f.new && mv /rw/f.new /rw/f' &&
        $T "$BIN/qvm-shutdown" --wait lc-work
    sleep 1.1
    $T "$BIN/qvm-run" -p -u root lc-work 'echo two > /rw/f.new && mv /rw/f.new /rw/f' &&
        $T "$BIN/qvm-shutdown" --wait lc-work
    uuid=$("$BIN/qvm-prefs" lc-work uuid)
    vid="varlibqubes:vm/$uuid"
    check "real: volume ls" 0 "$(printf '%-60s  %-7s  %-11s  %s\n' POOL:VOLUME VMNAME VOLUME_NAME REVERT_POSSIBLE \
        "$vid/private" lc-work private Yes "$vid/root" lc-work root No "$vid/volatile" lc-work volatile No)" -- \
        "$BIN/qvm-volume" ls lc-work
    check "real: volume revert" 0 "" -- "$BIN/qvm-volume" revert lc-work:private
    check "real: the state of the stop before back" 0 "one" -- $T "$BIN/qvm-run" -p -u root lc-work 'cat /rw/f'
    check "real: revert of a running qube" 1 "" -- "$BIN/qvm-volume" revert lc-work:private
    check_stderr_is "real: revert of a running qube: message" "Error: Domain is not powered off: 'lc-work'"

    check "real: shutdown --all --wait" 0 "" -- $T "$BIN/qvm-shutdown" --all --wait
    check "real: nothing running" 1 "" -- "$BIN/qvm-check" -q --running --all
fi

echo "qvm lifecycle tools: $pass passed, $fail failed"
[ "$fail" = 0 ]
