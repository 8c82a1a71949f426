#!/usr/bin/env bash
# Runs the qvm-* tools against a real aeried on a temporary socket: exact
# output text and exit codes as Qubes' qubesadmin tools give them (tables,
# listings, argument errors with exit 2, runtime errors with exit 1, the
# daemon's refusals).
set -u
BIN=$1
WORK=$(mktemp -d)
DAEMON_PID=
cleanup() {
    if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
pass=0
fail=0

"$BIN/aeried" --state-dir "$WORK" --socket "$WORK/qubesd.sock" \
    --internal-socket "$WORK/qubesd.internal.sock" >"$WORK/aeried.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do
    [ -S "$WORK/qubesd.sock" ] && break
    sleep 0.05
done
if [ ! -S "$WORK/qubesd.sock" ]; then
    echo "FAIL: aeried did not start"
    cat "$WORK/aeried.log"
    exit 1
fi
export QUBESD_SOCKET=$WORK/qubesd.sock
export COLUMNS=80  # argparse wraps usage at $COLUMNS - 2
EMPTY="Got empty response from qubesd. See journalctl in dom0 for details."
# shellcheck source=check_lib.sh
source "$(dirname "$0")/check_lib.sh"

# Lines of a qvm-prefs listing for the named properties (exact padding).
prefs_lines() {  # VM PROP...
    local vm=$1
    shift
    local pattern
    pattern="^($(IFS='|'; echo "$*")) "
    "$BIN/qvm-prefs" "$vm" | grep -E "$pattern"
}

# --- qvm-create --------------------------------------------------------------
check "ls: dom0 only" 0 "NAME  STATE    CLASS    LABEL  TEMPLATE  NETVM
dom0  Running  AdminVM  black  -         -" -- "$BIN/qvm-ls"

check "create template" 0 "" -- "$BIN/qvm-create" --class TemplateVM --label black fedora
check "create AppVM" 0 "" -- "$BIN/qvm-create" --template fedora --label red work
check "create AppVM, short options and properties" 0 "" -- \
    "$BIN/qvm-create" -t fedora -l orange --prop template_for_dispvms=True --property vcpus=1 dvm
check "create StandaloneVM (-C)" 0 "" -- \
    "$BIN/qvm-create" -C StandaloneVM -l green --prop provides_network=True sys-net
check "create --disp (label red)" 0 "" -- "$BIN/qvm-create" --disp --template dvm disp1
check "create --standalone from a template (a clone)" 0 "" -- \
    "$BIN/qvm-create" --standalone --template fedora -l blue vault

check "create without --label" 2 "" -- "$BIN/qvm-create" nolabel
check_stderr "create without --label: usage" "usage: qvm-create [--verbose] [--quiet] [--help]"
check_stderr "create without --label: message" "qvm-create: error: --label option is mandatory"
check "create without a name" 2 "" -- "$BIN/qvm-create" --label red
check_stderr "create without a name: message" "qvm-create: error: VMNAME is mandatory"
check "create with an unknown label" 2 "" -- "$BIN/qvm-create" --label mauve x
check_stderr "create with an unknown label: message" \
    "qvm-create: error: no such label: 'mauve'; available: red, orange, yellow, green, gray, blue, purple, black"
check "create with a bad property token" 2 "" -- "$BIN/qvm-create" --label red --prop memory x
check_stderr "create with a bad property token: message" "qvm-create: error: invalid property token: 'memory'"
check "create --label without its value" 2 "" -- "$BIN/qvm-create" x --label
check_stderr "create --label without its value: message" \
    "qvm-create: error: argument --label/-l: expected one argument"
check "create an existing name (refused)" 1 "" -- "$BIN/qvm-create" --label red work
check_stderr_is "create an existing name: logged" "app: Error creating VM: VM work already exists"
check "create an existing name, -q" 1 "" -- "$BIN/qvm-create" -q --label red work
check_stderr_is "create an existing name, -q: bare message" "Error creating VM: VM work already exists"
check "create, a property refused after creation" 2 "" -- \
    "$BIN/qvm-create" --label red --template fedora --prop memory=lots --prop vcpus=3 half
check_stderr_is "create, a property refused: logged" \
    "app: Error setting property memory (but VM created): Failed to parse property value as int"
check "create --help-classes" 0 "AdminVM
AppVM
DispVM
RemoteVM
StandaloneVM
TemplateVM" -- "$BIN/qvm-create" --help-classes
check "create --help" 0 "" -- sh -c "'$BIN/qvm-create' --help >/dev/null"

# --- qvm-ls ------------------------------------------------------------------
check "ls: default columns, sorted by name" 0 "NAME     STATE    CLASS         LABEL   TEMPLATE  NETVM
disp1    Halted   DispVM        red     dvm       -
dom0     Running  AdminVM       black   -         -
dvm      Halted   AppVM         orange  fedora    -
fedora   Halted   TemplateVM    black   -         -
half     Halted   AppVM         red     fedora    -
sys-net  Halted   StandaloneVM  green   -         -
vault    Halted   StandaloneVM  blue    -         -
work     Halted   AppVM         red     fedora    -" -- "$BIN/qvm-ls"
check "ls --raw-list" 0 "disp1
dom0
dvm
fedora
half
sys-net
vault
work" -- "$BIN/qvm-ls" --raw-list
check "ls --raw-data" 0 "dvm|Halted|AppVM|orange|fedora|-
work|Halted|AppVM|red|fedora|-" -- "$BIN/qvm-ls" --raw-data work dvm
# vcpus' default is sized to the host: Qubes' 2 where the host has a CPU to
# spare besides, else one less than the host's CPUs (docs/security.md).
CPUS=$(nproc)
DEFAULT_VCPUS=$(( CPUS > 2 ? 2 : (CPUS > 1 ? CPUS - 1 : 1) ))
check "ls --raw-data --fields (any property)" 0 "dvm|orange|True|1
sys-net|green|False|$DEFAULT_VCPUS" -- "$BIN/qvm-ls" --raw-data --fields name,label,template_for_dispvms,vcpus sys-net dvm
check "ls -O with a flags column" 0 "NAME     FLAGS
dom0     0r------
fedora   t-U-----
sys-net  s-UN----
work     a-------" -- "$BIN/qvm-ls" -O name,flags dom0 fedora sys-net work
check "ls -o full (unknown property shows -)" 0 "NAME  STATE    CLASS    LABEL  QID  XID  UUID
dom0  Running  AdminVM  black  0    0    00000000-0000-0000-0000-000000000000" -- \
    "$BIN/qvm-ls" -o full dom0
check "ls wildcards" 0 "disp1
dom0
dvm" -- "$BIN/qvm-ls" --raw-list 'd*' 'dv?'
check "ls --running" 0 "dom0" -- "$BIN/qvm-ls" --raw-list --running
check "ls --halted --class" 0 "dvm
half
work" -- "$BIN/qvm-ls" --raw-list --halted --class AppVM
check "ls --label" 0 "disp1
half
work" -- "$BIN/qvm-ls" --raw-list --label red
check "ls --template-source" 0 "dvm
half
work" -- "$BIN/qvm-ls" --raw-list --template-source fedora
check "ls --all --exclude (dom0 kept)" 0 "dom0
dvm
fedora
sys-net
vault
work" -- "$BIN/qvm-ls" --raw-list --all --exclude disp1 --exclude half
check "ls --exclude without --all" 2 "" -- "$BIN/qvm-ls" --exclude work
check_stderr "ls --exclude without --all: message" "qvm-ls: error: --exclude can only be used with --all"
check "ls: no such domain" 2 "" -- "$BIN/qvm-ls" nosuch
check_stderr "ls: no such domain: usage" "usage: qvm-ls [--verbose] [--quiet] [--help] [--all] [--exclude EXCLUDE]"
check_stderr "ls: no such domain: message" "qvm-ls: error: no such domain: 'nosuch'"
check "ls: bad format" 2 "" -- "$BIN/qvm-ls" --format nope
check_stderr "ls: bad format: message" \
    "qvm-ls: error: argument --format/-o: invalid choice: 'nope' (choose from 'simple', 'network', 'kernel', 'full', 'prefs', 'disk')"
check "ls: --format with --fields" 2 "" -- "$BIN/qvm-ls" --format full --fields name
check_stderr "ls: --format with --fields: message" \
    "qvm-ls: error: argument --fields/-O: not allowed with argument --format/-o"
check "ls: unknown option" 2 "" -- "$BIN/qvm-ls" --bogus
check_stderr "ls: unknown option: message" "qvm-ls: error: unrecognized arguments: --bogus"
check "ls --sort --reverse" 0 "NAME   CLASS         LABEL
work   AppVM         red
dvm    AppVM         orange
vault  StandaloneVM  blue" -- "$BIN/qvm-ls" -O name,class,label --sort label --reverse work dvm vault
check "ls --help-formats" 0 "Available formats:
  disk     NAME,STATE,DISK,PRIV-CURR,PRIV-MAX,PRIV-USED,ROOT-CURR,ROOT-MAX,ROOT-USED
  full     NAME,STATE,CLASS,LABEL,QID,XID,UUID
  kernel   NAME,STATE,CLASS,TEMPLATE,KERNEL,KERNELOPTS
  network  NAME,STATE,NETVM,IP,IPBACK,GATEWAY
  prefs    NAME,LABEL,TEMPLATE,NETVM,VCPUS,INITIALMEM,MAXMEM,VIRT_MODE
  simple   NAME,STATE,CLASS,LABEL,TEMPLATE,NETVM" -- "$BIN/qvm-ls" --help-formats

# --- qvm-prefs -----------------------------------------------------------------
check "prefs: set a qube property" 0 "" -- "$BIN/qvm-prefs" work netvm sys-net
check "prefs: get it" 0 "sys-net" -- "$BIN/qvm-prefs" work netvm
check "prefs: --get/--set accepted and ignored" 0 "" -- "$BIN/qvm-prefs" --set work memory 800
check "prefs: get an int" 0 "800" -- "$BIN/qvm-prefs" -g work memory
check "prefs: listing (D default, - set)" 0 "label                 -  red
memory                -  800
netvm                 -  sys-net
template              -  fedora
template_for_dispvms  D  False" -- prefs_lines work label memory netvm template template_for_dispvms
check "prefs: an empty str value" 0 "kernelopts            D  " -- prefs_lines work kernelopts
check "prefs: listing, unset without default" 0 "backup_timestamp      U" -- prefs_lines work backup_timestamp
check "prefs: listing, vm property None" 0 "default_dispvm        D  None" -- prefs_lines work default_dispvm
# Names padded to the longest of all; unset ones shown anyway.
check "prefs: --hide-default" 0 "backup_timestamp      U
label                 -  red
memory                -  800
name                  -  work
netvm                 -  sys-net
qid                   -  2
template              -  fedora" -- sh -c "'$BIN/qvm-prefs' --hide-default work | grep -v '^uuid '"
check "prefs: -D resets" 0 "" -- "$BIN/qvm-prefs" -D work memory
check "prefs: reset to the default" 0 "memory                D  400" -- prefs_lines work memory
check "prefs: --default resets" 0 "" -- "$BIN/qvm-prefs" work --default netvm
check "prefs: dashes in a name" 0 "False" -- "$BIN/qvm-prefs" work template-for-dispvms
check "prefs: None clears a qube property" 0 "" -- "$BIN/qvm-prefs" dvm netvm None
check "prefs: a None qube property prints nothing" 0 "" -- "$BIN/qvm-prefs" dvm netvm
check "prefs: no such property" 2 "" -- "$BIN/qvm-prefs" work nosuch
check_stderr "prefs: no such property: usage" "usage: qvm-prefs [--verbose] [--quiet] [--help] [--help-properties]"
check_stderr "prefs: no such property: message" "qvm-prefs: error: no such property: 'nosuch'"
check "prefs: unset without default" 2 "" -- "$BIN/qvm-prefs" work backup_timestamp
check_stderr "prefs: unset without default: message" "qvm-prefs: error: no such property: 'backup_timestamp'"
# QubesValueError is answered (Qubes R4.3): a runtime error, not a usage one.
check "prefs: value refused by the daemon" 1 "" -- "$BIN/qvm-prefs" work memory lots
check_stderr "prefs: value refused: message" "qvm-prefs: error: Failed to parse property value as int"
check "prefs: no VMNAME" 2 "" -- "$BIN/qvm-prefs"
check_stderr "prefs: no VMNAME: message" "qvm-prefs: error: the following arguments are required: VMNAME"
check "prefs: no such domain" 2 "" -- "$BIN/qvm-prefs" nosuch
check_stderr "prefs: no such domain: message" "qvm-prefs: error: no such domain: 'nosuch'"
check "prefs: too many arguments" 2 "" -- "$BIN/qvm-prefs" work memory 1 2
check_stderr "prefs: too many arguments: message" "qvm-prefs: error: unrecognized arguments: 2"

# --- qvm-features --------------------------------------------------------------
check "features: none yet" 0 "" -- "$BIN/qvm-features" work
check "features: set" 0 "" -- "$BIN/qvm-features" work service.cups 1
check "features: set another" 0 "" -- "$BIN/qvm-features" work os Linux
check "features: set empty" 0 "" -- "$BIN/qvm-features" work appmenus-dispvm ''
check "features: get" 0 "Linux" -- "$BIN/qvm-features" work os
check "features: listing aligned" 0 "appmenus-dispvm  
os               Linux
service.cups     1" -- "$BIN/qvm-features" work
check "features: missing one exits 1" 1 "" -- "$BIN/qvm-features" work nosuch
check "features: --unset" 0 "" -- "$BIN/qvm-features" --unset work os
check "features: -D a missing one is fine" 0 "" -- "$BIN/qvm-features" -D work nosuch
check "features: --delete alias" 0 "" -- "$BIN/qvm-features" work appmenus-dispvm --delete
check "features: after unsetting" 0 "service.cups  1" -- "$BIN/qvm-features" work
check "features: --unset without a feature" 2 "" -- "$BIN/qvm-features" -D work
check_stderr "features: --unset without a feature: message" "qvm-features: error: --unset requires a feature"
check "features: set and unset at once" 2 "" -- "$BIN/qvm-features" -D work os Linux
check_stderr "features: set and unset: message" "qvm-features: error: cannot both set and unset a value"

# --- qvm-tags ------------------------------------------------------------------
check "tags: created-by on creation" 0 "created-by-dom0" -- "$BIN/qvm-tags" work
check "tags: add several" 0 "" -- "$BIN/qvm-tags" work add web mail
check "tags: alias set" 0 "" -- "$BIN/qvm-tags" work set backup
check "tags: list sorted" 0 "backup
created-by-dom0
mail
web" -- "$BIN/qvm-tags" work list
check "tags: query present" 0 "web" -- "$BIN/qvm-tags" work ls web
check "tags: query absent exits 1" 1 "" -- "$BIN/qvm-tags" work l nosuch
check "tags: del" 0 "" -- "$BIN/qvm-tags" work del mail
check "tags: alias unset, missing tag is fine" 0 "" -- "$BIN/qvm-tags" work unset nosuch
check "tags: after deleting" 0 "backup
created-by-dom0
web" -- "$BIN/qvm-tags" work
check "tags: add without a tag" 2 "" -- "$BIN/qvm-tags" work add
check_stderr "tags: add without a tag: sub-command usage" "usage: qvm-tags VMNAME add [--verbose] [--quiet] [--help] tag [tag ...]"
check_stderr "tags: add without a tag: message" \
    "qvm-tags VMNAME add: error: the following arguments are required: tag"
check "tags: del takes one tag" 2 "" -- "$BIN/qvm-tags" work del a b
check_stderr "tags: del takes one tag: message" "qvm-tags: error: unrecognized arguments: b"
check "tags: unknown command" 2 "" -- "$BIN/qvm-tags" work frob
check_stderr "tags: unknown command: message" \
    "qvm-tags: error: argument command: invalid choice: 'frob' (choose from 'list', 'ls', 'l', 'add', 'a', 'set', 'del', 'd', 'unset', 'u')"
check "ls --tags / --exclude-tags" 0 "work" -- "$BIN/qvm-ls" --raw-list --tags web backup
check "ls --exclude-tags" 0 "dvm
half" -- "$BIN/qvm-ls" --raw-list --class AppVM --exclude-tags web

# --- qvm-label -----------------------------------------------------------------
check "label: the defaults" 0 "INDEX  NAME    COLOR
1      red     0xcc0000
2      orange  0xf57900
3      yellow  0xedd400
4      green   0x73d216
5      gray    0x555555
6      blue    0x3465a4
7      purple  0x75507b
8      black   0x000000" -- "$BIN/qvm-label" list
check "label: create" 0 "" -- "$BIN/qvm-label" create teal 0x008080
check "label: listed" 0 "9      teal    0x008080" -- sh -c "'$BIN/qvm-label' | grep teal"
check "label: usable" 0 "" -- "$BIN/qvm-prefs" half label teal
check "label: ls --label" 0 "half" -- "$BIN/qvm-ls" --raw-list --label teal
check "label: in use, refused" 1 "" -- "$BIN/qvm-label" remove teal
check_stderr "label: in use: message" "qvm-label: error: "
check "label: bad colour" 2 "" -- "$BIN/qvm-label" create ugly 123456
check_stderr "label: bad colour: message" "qvm-label create: error: invalid color: '123456' (expected 0xRRGGBB)"
check "label: all-digit name" 2 "" -- "$BIN/qvm-label" create 42 0x123456
check_stderr "label: all-digit name: message" "qvm-label create: error: invalid label name: '42'"
check "label: create without a colour" 2 "" -- "$BIN/qvm-label" create plum
check_stderr "label: create without a colour: message" \
    "qvm-label create: error: the following arguments are required: COLOR"
check "label: a default cannot go" 1 "" -- "$BIN/qvm-label" remove red
check_stderr_is "label: a default cannot go: message" "qvm-label: error: $EMPTY"
check "label: free it" 0 "" -- "$BIN/qvm-prefs" half label red
check "label: remove" 0 "" -- "$BIN/qvm-label" rm teal
check "label: gone" 1 "" -- sh -c "'$BIN/qvm-label' | grep teal"

# --- qvm-clone -----------------------------------------------------------------
"$BIN/qvm-prefs" work memory 600 >/dev/null
check "clone" 0 "" -- "$BIN/qvm-clone" work work2
check "clone: class, template, label" 0 "work2|AppVM|red|fedora" -- \
    "$BIN/qvm-ls" --raw-data -O name,class,label,template work2
check "clone: set properties copied" 0 "memory                -  600" -- prefs_lines work2 memory
check "clone: tags copied" 0 "backup
created-by-dom0
web" -- "$BIN/qvm-tags" work2
check "clone: features copied" 0 "service.cups  1" -- "$BIN/qvm-features" work2
check "clone --class" 0 "" -- "$BIN/qvm-clone" -C StandaloneVM fedora work3
check "clone --class: its class and template" 0 "StandaloneVM|-" -- "$BIN/qvm-ls" --raw-data -O class,template work3
# As in Qubes: the template of an AppVM goes into the request, and a
# StandaloneVM cannot have one.
check "clone --class, refused" 1 "" -- "$BIN/qvm-clone" -C StandaloneVM work work4
check_stderr_is "clone --class, refused: message" "qvm-clone: error: StandaloneVM cannot be based on template"
check "clone --class, refused: nothing left" 2 "" -- "$BIN/qvm-ls" work4
check "clone: no NEWVM" 2 "" -- "$BIN/qvm-clone" work
check_stderr "clone: no NEWVM: message" "qvm-clone: error: the following arguments are required: NEWVM"
check "clone: no such source" 2 "" -- "$BIN/qvm-clone" nosuch x
check_stderr "clone: no such source: message" "qvm-clone: error: no such domain: 'nosuch'"
check "clone onto an existing name" 1 "" -- "$BIN/qvm-clone" work work2
check_stderr_is "clone onto an existing name: message" "qvm-clone: error: VM work2 already exists"

# --- qvm-remove ----------------------------------------------------------------
check "remove: no qube named" 2 "" -- "$BIN/qvm-remove"
check_stderr "remove: no qube named: message" "qvm-remove: error: one of the arguments --all VMNAME is required"
check "remove: no such domain" 2 "" -- "$BIN/qvm-remove" -f nosuch
check_stderr "remove: no such domain: message" "qvm-remove: error: no such domain: 'nosuch'"
echo n >"$WORK/no"
echo y >"$WORK/yes"
STDIN=$WORK/no check "remove: answer no" 1 "This will completely remove the selected VM(s)...
  work3
Are you sure? [y/N] Remove cancelled." -- "$BIN/qvm-remove" work3
STDIN=/dev/null check "remove: no answer at all" 1 "This will completely remove the selected VM(s)...
  work3
Are you sure? [y/N] " -- "$BIN/qvm-remove" work3
check_stderr "remove: no answer: EOFError" "EOFError: EOF when reading a line"
STDIN=$WORK/yes check "remove: answer yes" 0 "This will completely remove the selected VM(s)...
  work3
Are you sure? [y/N] " -- "$BIN/qvm-remove" work3
check "remove: gone" 2 "" -- "$BIN/qvm-ls" work3
check "remove: a template in use is refused" 1 "VM fedora cannot be removed. It is in use as:
 - template for dvm
 - template for half
 - template for work
 - template for work2" -- "$BIN/qvm-remove" -f fedora
check_stderr "remove: refused: the daemon names the dependants" "qvm-remove: error: Domain is in use: 'fedora'"
check_stderr "remove: refused: dependants" "work.template"
check "remove: --force, several" 0 "" -- "$BIN/qvm-remove" --force work2 half
check "remove: --exclude without --all" 2 "" -- "$BIN/qvm-remove" -f --exclude x work
check "remove: what is left" 0 "disp1
dom0
dvm
fedora
sys-net
vault
work" -- "$BIN/qvm-ls" --raw-list

# --- the daemon out of reach -----------------------------------------------------
QUBESD_SOCKET=$WORK/nosuch.sock check "no daemon" 1 "" -- "$BIN/qvm-ls"
check_stderr_is "no daemon: message" \
    "qvm-ls: error: Failed to connect to qubesd service: [Errno 2] No such file or directory"

# --- qvm-run --dispvm (against fake_qubesd.py) ----------------------------------
# The fake daemon logs every request ("DEST METHOD[ PAYLOAD]") and makes
# disposables (disp1000, disp1001, ...); qvm-run runs the qrexec-client next
# to it: a fake that logs its command line.
HERE=$(cd "$(dirname "$0")" && pwd)
FAKE_PID=
stop_fake() {
    if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null; wait "$FAKE_PID" 2>/dev/null; fi
    FAKE_PID=
}
trap 'stop_fake; cleanup' EXIT
cat >"$WORK/fake-state.json" <<'EOF'
{"qubes": {
  "dom0": {"class": "AdminVM", "state": "Running", "properties": {"default_dispvm": "vm default-dvm"}},
  "default-dvm": {"class": "AppVM", "state": "Halted", "properties": {"template_for_dispvms": "bool True"}},
  "other-dvm": {"class": "AppVM", "state": "Halted", "properties": {"template_for_dispvms": "bool True"}},
  "work": {"class": "AppVM", "state": "Halted"}
 },
 "replies": {"broken-dvm admin.vm.CreateDisposable": null},
 "next_dispid": 1000}
EOF
echo '{}' >"$WORK/fake-replies.json"
python3 "$HERE/fake_qubesd.py" --socket "$WORK/fake.sock" --log "$WORK/requests" \
    --state "$WORK/fake-state.json" --replies "$WORK/fake-replies.json" >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
wait_for_socket "$WORK/fake.sock" "$FAKE_PID"
mkdir "$WORK/runbin"
cp "$BIN/qvm-run" "$WORK/runbin/"
cat >"$WORK/runbin/qrexec-client" <<'END'
#!/bin/bash
printf '%s\n' "$*" >>"$FAKE_QREXEC_LOG"
if [ -n "$FAKE_SLEEP" ]; then
    sleep "$FAKE_SLEEP" &
    trap 'kill $!; exit 143' TERM
    wait $!
fi
echo remote-out
exit "${FAKE_RC:-0}"
END
chmod +x "$WORK/runbin/qrexec-client"
RUN=$WORK/runbin/qvm-run
SD="--socket-dir=$WORK/qrexec"
export FAKE_QREXEC_LOG=$WORK/qrexec-client.log
: >"$FAKE_QREXEC_LOG"
: >"$WORK/requests"

frun() {  # a command against the fake daemon
    QUBESD_SOCKET=$WORK/fake.sock QREXEC_SOCKET_DIR=$WORK/qrexec "$@"
}

check "run --dispvm: the default template" 0 "" -- frun "$RUN" --dispvm -- 'echo hi'
check_stderr_is "run --dispvm: message" "Running 'echo hi' on @dispvm"
check_file "run --dispvm: requests" "$WORK/requests" "dom0 admin.vm.CreateDisposable
disp1000 admin.vm.Start
disp1000 admin.vm.Kill"
check_file "run --dispvm: qrexec-client" "$FAKE_QREXEC_LOG" "$SD -d disp1000 DEFAULT:echo hi"
check "run --dispvm: the disposable is gone" 0 "default-dvm
dom0
other-dvm
work" -- frun "$BIN/qvm-ls" --raw-list
: >"$WORK/requests"
FAKE_RC=3 check "run --dispvm=TPL -p: output and exit code" 3 "remote-out" -- \
    frun "$RUN" --dispvm=other-dvm -p -u root cat
check_stderr_is "run --dispvm=TPL -p: no message" ""
check_file "run --dispvm=TPL -p: requests" "$WORK/requests" "other-dvm admin.vm.CreateDisposable
disp1001 admin.vm.Start
disp1001 admin.vm.Kill"
check_file "run --dispvm=TPL -p: qrexec-client" "$FAKE_QREXEC_LOG" "$SD -d disp1001 root:cat"
check "run --dispvm TPL --service: waited for" 0 "" -- frun "$RUN" --dispvm other-dvm --service qubes.Test+arg
check_file "run --dispvm TPL --service: requests" "$WORK/requests" "other-dvm admin.vm.CreateDisposable
disp1002 admin.vm.Start
disp1002 admin.vm.Kill"
check_file "run --dispvm TPL --service: no -e" "$FAKE_QREXEC_LOG" \
    "$SD -d disp1002 DEFAULT:QUBESRPC qubes.Test+arg dom0"
check "run --dispvm with arguments" 0 "" -- frun "$RUN" -q --dispvm -- ls -l "a b"
check_file "run --dispvm with arguments: qrexec-client" "$FAKE_QREXEC_LOG" "$SD -d disp1003 DEFAULT:ls -l 'a b'"
: >"$WORK/requests"
check "run --dispvm: a template that is not one" 255 "" -- frun "$RUN" --dispvm=work true
check_stderr_is "run --dispvm: not a template: message" "Running 'true' on @dispvm:work
@dispvm:work: Failed to create a disposable: \
Refusing to create DispVM out of this AppVM, because template_for_dispvms=False"
check_file "run --dispvm: not a template: no Start, no Kill" "$WORK/requests" "work admin.vm.CreateDisposable"
check "run --dispvm: CreateDisposable refused" 255 "" -- frun "$RUN" -p --dispvm=broken-dvm true
check_stderr_is "run --dispvm: refused: message" "@dispvm:broken-dvm: Failed to create a disposable: $EMPTY"
check_file "run --dispvm: refused: no Start, no Kill" "$WORK/requests" "broken-dvm admin.vm.CreateDisposable"
check_file "run --dispvm: refused: nothing run" "$FAKE_QREXEC_LOG" ""
echo '{"disp1004 admin.vm.Start": "2\u0000QubesException\u0000\u0000Not enough memory\u0000"}' \
    >"$WORK/fake-replies.json"
check "run --dispvm: Start fails" 255 "" -- frun "$RUN" --dispvm -- true
check_stderr_is "run --dispvm: Start fails: message" "Running 'true' on @dispvm
disp1004: Failed to start the disposable: Not enough memory"
check_file "run --dispvm: Start fails: killed" "$WORK/requests" "dom0 admin.vm.CreateDisposable
disp1004 admin.vm.Start
disp1004 admin.vm.Kill"
check_file "run --dispvm: Start fails: nothing run" "$FAKE_QREXEC_LOG" ""
echo '{"disp1005 admin.vm.Kill": "2\u0000QubesVMNotRunningError\u0000\u0000Domain not running\u0000"}' \
    >"$WORK/fake-replies.json"
check "run --dispvm: halted by itself at the end" 0 "remote-out" -- frun "$RUN" --dispvm -p true
check_stderr_is "run --dispvm: halted by itself: no message" ""
echo '{"disp1006 admin.vm.Kill": "2\u0000QubesException\u0000\u0000Kill refused\u0000"}' \
    >"$WORK/fake-replies.json"
check "run --dispvm: Kill fails" 0 "remote-out" -- frun "$RUN" --dispvm -p true
check_stderr_is "run --dispvm: Kill fails: message" "disp1006: Failed to kill the disposable: Kill refused"
echo '{}' >"$WORK/fake-replies.json"
: >"$WORK/requests"
: >"$FAKE_QREXEC_LOG"
# SIGTERM while the command runs: passed on to qrexec-client, then Kill.
FAKE_SLEEP=10 QUBESD_SOCKET=$WORK/fake.sock QREXEC_SOCKET_DIR=$WORK/qrexec "$RUN" -p --dispvm -- sleeper \
    >/dev/null 2>"$WORK/stderr" &
RUN_PID=$!
for _ in $(seq 200); do
    grep -q sleeper "$FAKE_QREXEC_LOG" 2>/dev/null && break
    sleep 0.05
done
kill -TERM "$RUN_PID"
wait "$RUN_PID"
rc=$?
if [ "$rc" = 143 ]; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: run --dispvm: SIGTERM (rc=$rc, want 143)"
fi
check_file "run --dispvm: SIGTERM: killed" "$WORK/requests" "dom0 admin.vm.CreateDisposable
disp1007 admin.vm.Start
disp1007 admin.vm.Kill"
check "run --dispvm TPL without a command" 2 "" -- frun "$RUN" --dispvm other-dvm
check_stderr "run --dispvm TPL without a command: message" \
    "qvm-run: error: the following arguments are required: COMMAND, ARG"
check "run --dispvm --all" 2 "" -- frun "$RUN" --dispvm --all true
check_stderr "run --dispvm --all: message" "qvm-run: error: argument --all: not allowed with argument --dispvm"
check_file "run --dispvm: argument errors ask nothing" "$WORK/requests" ""
stop_fake

echo "qvm tools: $pass passed, $fail failed"
[ "$fail" = 0 ]
