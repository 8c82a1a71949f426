# The checks the qvm-* tool tests share. The sourcing script sets WORK (a
# scratch folder), pass and fail (counters); a check runs a command or looks
# at a file and counts a pass or prints what differs and counts a failure.

check() {  # NAME EXPECTED_RC EXPECTED_STDOUT -- COMMAND...
    local name=$1 want_rc=$2 want_out=$3
    shift 4
    local out rc
    out=$("$@" 2>"$WORK/stderr" <"${STDIN:-/dev/null}")
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

check_stderr_is() {  # NAME TEXT: the last command's stderr must be exactly TEXT
    local got
    got=$(cat "$WORK/stderr")
    if [ "$got" = "$2" ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $1: stderr differs"
        diff <(printf '%s\n' "$2") <(printf '%s\n' "$got") | sed 's/^/    /'
    fi
}

check_file() {  # NAME FILE TEXT: FILE must hold exactly TEXT; then it is emptied
    local got
    got=$(cat "$2")
    if [ "$got" = "$3" ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $1: $(basename "$2") differs"
        diff <(printf '%s\n' "$3") <(printf '%s\n' "$got") | sed 's/^/    /'
    fi
    : >"$2"
}

wait_for_socket() {  # PATH PID: true once PATH is a socket, false if PID ends first or after 10 s
    for _ in $(seq 200); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
