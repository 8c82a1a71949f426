#!/usr/bin/env bash
# qvm-copy's family, qfile-agent and qfile-unpacker as programs: exact
# output and exit codes (usage, dom0's refusal, the checks before a call),
# a round trip from qfile-agent into qfile-unpacker, the receiver's answer
# bytes and exit code for a refused stream, and the service's argument.
set -u
BIN=$1
RPC=$2
WORK=$(mktemp -d)
trap 'chmod -R u+rwx "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
pass=0
fail=0
# shellcheck source=check_lib.sh
. "$(dirname "$0")/check_lib.sh"

# --- qvm-copy and its names ------------------------------------------------------------------------
# (Here is dom0, where only the -to-vm names work: see below.)
check "qvm-copy-to-vm -h" 0 "usage: $BIN/qvm-copy-to-vm [--without-progress] [--ignore-symlinks] destination_qube_name FILE [FILE ...]" -- \
    sh -c "'$BIN/qvm-copy-to-vm' --help | head -n 1"
check "qvm-move-to-vm -h names the move" 0 "Move FILE to ~/QubesIncoming/[THIS QUBE'S NAME]/ in the destination qube." -- \
    sh -c "'$BIN/qvm-move-to-vm' -h | grep '^Move'"
check "qvm-copy-to-vm without files" 1 "" -- sh -c "'$BIN/qvm-copy-to-vm' >/dev/null"
check "qvm-copy-to-vm with one argument" 1 "" -- sh -c "'$BIN/qvm-copy-to-vm' work >/dev/null"
check "an unknown option" 1 "" -- sh -c "'$BIN/qvm-copy-to-vm' --bogus work f >/dev/null"
ln -s "$BIN/qvm-copy" "$WORK/qvm-other"
check "an unknown name" 1 "Invoked with unrecognized name $WORK/qvm-other, cannot determine operation to perform" -- \
    "$WORK/qvm-other" f

# Here is dom0 (no qrexec agent socket): qvm-copy needs a target.
check "qvm-copy in dom0" 1 "qvm-copy is not supported in dom0; use qvm-copy-to-vm instead." -- "$BIN/qvm-copy" f
check "qvm-move in dom0" 1 "qvm-move is not supported in dom0; use qvm-move-to-vm instead." -- "$BIN/qvm-move" f

# The checks before a call (nothing is started when they fail).
mkdir -p "$WORK/src/tree/sub"
printf 'data\n' >"$WORK/src/tree/f"
printf 'more\n' >"$WORK/src/tree/sub/g"
ln -s ../f "$WORK/src/tree/sub/l"
ln -s tree/f "$WORK/src/top"
check "a top-level symlink" 1 "" -- sh -c "cd '$WORK/src' && '$BIN/qvm-copy-to-vm' work top"
check_stderr_is "a top-level symlink: message" 'qvm-copy-to-vm: Refusing to copy unsafe symbolic link "top"'
check "dot-dot" 1 "" -- sh -c "cd '$WORK/src' && '$BIN/qvm-copy-to-vm' work .."
check_stderr_is "dot-dot: message" 'qvm-copy-to-vm: Argument 1 is "..", which is not allowed.  Try operating from the parent directory.'
check "a missing file" 1 "" -- sh -c "cd '$WORK/src' && '$BIN/qvm-copy-to-vm' work nothing"
check_stderr_is "a missing file: message" 'qvm-copy-to-vm: fstatat("nothing"): No such file or directory'

# --- qfile-agent into qfile-unpacker ---------------------------------------------------------------
mkdir "$WORK/in"
mkfifo "$WORK/answer"
check "a round trip" 0 "" -- sh -c "cd '$WORK/src' && PROGRESS_TYPE=none '$BIN/qfile-agent' tree <'$WORK/answer' | '$BIN/qfile-unpacker' '' '$WORK/in' >'$WORK/answer'"
check "the same tree arrived" 0 "" -- diff -r "$WORK/src/tree" "$WORK/in/tree"
check "the link arrived as a link" 0 "../f" -- readlink "$WORK/in/tree/sub/l"
check "again: the name exists (the receiver exits with EEXIST)" 17 "" -- sh -c "cd '$WORK/src' && PROGRESS_TYPE=none '$BIN/qfile-agent' tree <'$WORK/answer' | '$BIN/qfile-unpacker' '' '$WORK/in' >'$WORK/answer'"
check_stderr_is "again: the sender's message" 'A file named "tree/f" already exists in QubesIncoming dir'

# A refused stream: "../x" answered EILSEQ (84) with the name, exit code 84.
# (namelen 5, mode 0100644, filelen 1, zero times, "../x\0", "y")
stream() {
    printf '\005\000\000\000\244\201\000\000\001\000\000\000\000\000\000\000'
    printf '\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000../x\000y'
}
mkdir "$WORK/in2"
check "a traversal's answer" 84 "5400000000000000756e4f930000000004000000""2e2e2f78" -- \
    sh -c "$(declare -f stream); stream | '$BIN/qfile-unpacker' '' '$WORK/in2' | od -An -tx1 | tr -d ' \n'; exit \$(stream | '$BIN/qfile-unpacker' '' '$WORK/in2' >/dev/null; echo \$?)"
check "nothing was made for it" 0 "" -- sh -c "ls -A '$WORK/in2'; test ! -e '$WORK/x'"

# --- qfile-unpacker's own refusals -----------------------------------------------------------------
check "another user's ID" 1 "" -- "$BIN/qfile-unpacker" 4242 "$WORK/in"
check_stderr_is "another user's ID: message" "qfile-unpacker: Refusing to change to UID other than the caller's UID"
check "no remote domain" 1 "" -- env -u QREXEC_REMOTE_DOMAIN "$BIN/qfile-unpacker"
check_stderr_is "no remote domain: message" "qfile-unpacker: Cannot get remote domain name"
check "a remote domain that is no qube name" 1 "" -- env QREXEC_REMOTE_DOMAIN=../x "$BIN/qfile-unpacker"
check_stderr_is "a bad remote domain: message" "qfile-unpacker: incoming directory: not a valid qube name as the source"
check "the service's unknown argument" 1 "" -- env QREXEC_SERVICE_ARGUMENT=bogus "$RPC/qubes.Filecopy"
check_stderr_is "the service's unknown argument: message" "Unexpected argument bogus"

echo "qfile tools: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
