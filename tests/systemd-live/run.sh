#!/usr/bin/env bash
# Live systemd test suite for zk-nalloc's units (make test-systemd).
#
# Boots systemd as PID 1 in private namespaces (pid, mount, uts, ipc, net,
# cgroup) on an overlay of / whose upper layer is a tmpfs, installs this
# tree's build into it (make install DESTDIR=... PREFIX=/usr/local), runs
# systemd-sysusers and systemd-tmpfiles for the snippets, and checks socket
# activation, Type=notify, group access, warm restarts under a live client,
# the fd store and the per-user units. Nothing outside the namespaces
# changes: every file lands in the tmpfs, every process dies with PID 1.
#
# Usage: tests/systemd-live/run.sh BUILD_DIR   (as root; make test-systemd)
# Prints one "ok N ...", "FAIL N ..." or "skip N ..." line per test and ends
# with "N passed, N failed". Where systemd cannot boot here it prints one
# "SKIP: reason" line, "0 passed, 0 failed" and exits 0. ZKN_LIVE_BOOT_TIMEOUT
# (seconds, default 60) bounds the wait for systemd to boot; ZKN_LIVE_JOURNAL=FILE
# saves the booted system's whole journal there before it is torn down.
set -u

if [ "${1:-}" = "--boot" ]; then
    # ---- inside the new namespaces: build the root and exec systemd ----
    set -e
    T=$2
    mount --make-rprivate /
    mount -t tmpfs -o mode=0755 zkn-live "$T/ns"
    mkdir -p "$T/ns/upper" "$T/ns/work" "$T/ns/root"
    mount -t overlay zkn-live -o "lowerdir=/,upperdir=$T/ns/upper,workdir=$T/ns/work" "$T/ns/root"
    R=$T/ns/root
    # The staged install, the test helper and the boot target, before boot.
    cp -a "$T/stage/." "$R/"
    mount -t proc proc "$R/proc"
    mount -t tmpfs -o mode=0755 tmpfs "$R/run"
    mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
    mount --rbind /dev "$R/dev"
    mount -t sysfs sysfs "$R/sys"
    mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
    mkdir -p "$R/.zkn-oldroot"
    cd "$R"
    pivot_root . .zkn-oldroot
    umount -l /.zkn-oldroot
    rmdir /.zkn-oldroot
    exec env -i container=other /lib/systemd/systemd --unit=zkn-live.target
fi

B=${1:-build}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
SELF=$SRC/tests/systemd-live/run.sh
t_start=$(date +%s)

say_skip() {
    echo "test-systemd: SKIP: $*"
    echo "0 passed, 0 failed"
    exit 0
}

# ---- can systemd boot here at all? ----
[ "$(id -u)" -eq 0 ] || say_skip "needs root (it boots systemd in private namespaces)"
[ -x /lib/systemd/systemd ] || say_skip "no /lib/systemd/systemd"
for tool in unshare nsenter setpriv useradd systemd-sysusers systemd-tmpfiles systemctl \
            journalctl mount pivot_root python3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || say_skip "$tool not installed"
done
[ -x "$B/zknallocd" ] && [ -x "$B/tests/zkn-live-holder" ] ||
    say_skip "build first: no $B/zknallocd or $B/tests/zkn-live-holder"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then UNIFIED=/sys/fs/cgroup
elif [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then UNIFIED=/sys/fs/cgroup/unified
else say_skip "no cgroup2 hierarchy mounted (systemd $(/lib/systemd/systemd --version | head -1 | cut -d' ' -f2) needs one)"
fi

T=$(mktemp -d /tmp/zkn-sdlive.XXXXXX)
mkdir -p "$T/ns" "$T/stage"
own_cg=$(sed -n 's/^0:://p' /proc/self/cgroup)
CG=$UNIFIED${own_cg%/}/zkn-live-$$
BOOT_PID=""
PID1=""
JOBS=()

cleanup() {
    trap - EXIT INT TERM
    local j
    if [ -n "${ZKN_LIVE_JOURNAL:-}" ] && [ -n "$PID1" ]; then
        timeout 20 nsenter -t "$PID1" -m -p -u -i -n -C journalctl --no-pager -o short-monotonic \
            >"$ZKN_LIVE_JOURNAL" 2>&1
    fi
    for j in "${JOBS[@]}"; do kill "$j" 2>/dev/null; done
    # Killing PID 1 of a pid namespace kills every process in it; the mount
    # namespace, its tmpfs and overlay go with the last of them.
    [ -n "$PID1" ] && kill -KILL "$PID1" 2>/dev/null
    [ -n "$BOOT_PID" ] && { kill -KILL "$BOOT_PID" 2>/dev/null; wait "$BOOT_PID" 2>/dev/null; }
    for j in "${JOBS[@]}"; do wait "$j" 2>/dev/null; done
    if [ -d "$CG" ]; then
        [ -f "$CG/cgroup.kill" ] && echo 1 >"$CG/cgroup.kill" 2>/dev/null
        for _ in $(seq 50); do
            find "$CG" -depth -type d -exec rmdir {} + 2>/dev/null
            [ -d "$CG" ] || break
            sleep 0.1
        done
        [ -d "$CG" ] && echo "test-systemd: warning: could not remove cgroup $CG" >&2
    fi
    umount -l "$T/ns" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- stage the install and the test's own files ----
if ! (unset MAKEFLAGS MFLAGS MAKELEVEL
      make -s -C "$SRC" B="$B" install DESTDIR="$T/stage" PREFIX=/usr/local) >"$T/install.log" 2>&1; then
    echo "test-systemd: make install DESTDIR=$T/stage failed:"; sed 's/^/# /' "$T/install.log"
    echo "0 passed, 1 failed"
    exit 1
fi
install -D -m 0755 "$B/tests/zkn-live-holder" "$T/stage/opt/zkn-live/zkn-live-holder"
# How many fds the manager holds for the unit: NFileDescriptorStore, or
# where systemctl lacks it, "File Descriptor Store Current" in the dump.
cat >"$T/stage/opt/zkn-live/fdstore-count" <<'EOF'
#!/bin/sh
n=$(systemctl show -P NFileDescriptorStore zknallocd.service 2>/dev/null)
[ -n "$n" ] || n=$(systemd-analyze dump zknallocd.service 2>/dev/null |
    sed -n 's/.*File Descriptor Store Current: *//p' | head -n 1)
echo "$n"
EOF
chmod 0755 "$T/stage/opt/zkn-live/fdstore-count"
mkdir -p "$T/stage/etc/systemd/system/zknallocd.service.d"
# The default target of the test boot: journald, and D-Bus for logind and
# user managers (test 6). Nothing else of the host's boot runs.
cat >"$T/stage/etc/systemd/system/zkn-live.target" <<'EOF'
[Unit]
Description=zk-nalloc live systemd test
Wants=systemd-journald.socket systemd-journald.service dbus.socket
EOF
# Observation only: records how many fds the manager holds for the unit at
# each stop, before an explicit stop releases the store (test 5).
cat >"$T/stage/etc/systemd/system/zknallocd.service.d/zkn-live-observe.conf" <<'EOF'
[Service]
ExecStopPost=+/bin/sh -c 'mkdir -p /run/zkn-live; /opt/zkn-live/fdstore-count >> /run/zkn-live/fdstore-at-stop'
EOF

# ---- boot ----
mkdir "$CG" 2>/dev/null || say_skip "cannot create cgroup $CG"
( echo "$BASHPID" >"$CG/cgroup.procs" &&
  exec unshare --pid --fork --mount --uts --ipc --net --cgroup --propagation private \
       "$SELF" --boot "$T" ) >"$T/boot.log" 2>&1 &
BOOT_PID=$!
X=()
state=""
boot_deadline=$((SECONDS + ${ZKN_LIVE_BOOT_TIMEOUT:-60}))
while [ $SECONDS -lt $boot_deadline ]; do
    if [ -z "$PID1" ]; then
        PID1=$(cat /proc/"$BOOT_PID"/task/*/children 2>/dev/null | awk '{print $1}')
        [ -n "$PID1" ] && X=(nsenter -t "$PID1" -m -p -u -i -n -C)
    fi
    if [ -n "$PID1" ]; then
        state=$(timeout 5 "${X[@]}" systemctl is-system-running 2>/dev/null)
        case $state in running|degraded) break;; esac
    fi
    kill -0 "$BOOT_PID" 2>/dev/null || break
    sleep 0.1
done
case $state in
running|degraded) ;;
*) say_skip "systemd did not reach a running state within ${ZKN_LIVE_BOOT_TIMEOUT:-60} s here (state '${state:-none}'; $(tail -n 1 "$T/boot.log" 2>/dev/null))";;
esac
echo "test-systemd: systemd $(/lib/systemd/systemd --version | head -1 | cut -d' ' -f2) booted as PID 1 (host pid $PID1) in $(( $(date +%s) - t_start )) s, state $state"

# ---- helpers ----
passed=0; failed=0
in_ns() { timeout "${TMO:-30}" "${X[@]}" "$@"; }
# Runs a command as a user inside: as_user USER cmd...
as_user() { local u=$1; shift; in_ns setpriv --reuid "$u" --regid users --init-groups "$@"; }
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() {
    echo "FAIL $1"
    shift
    local l
    for l in "$@"; do printf '%s\n' "$l" | sed 's/^/#    /'; done
    failed=$((failed + 1))
}
journal_tail() { in_ns journalctl --no-pager -q -o cat -n "${2:-12}" -u "$1" 2>&1 | sed 's/^/| /'; }
show() { in_ns systemctl show -P "$1" "${2:-zknallocd.service}" 2>/dev/null; }
SYSSOCK=/run/zknalloc/zknallocd.sock
PRELOAD=(env LD_PRELOAD=/usr/local/lib/libzknalloc.so.0 "ZK_NALLOC_SOCKET=$SYSSOCK")
HOLDER=/opt/zkn-live/zkn-live-holder
# stats_get EXPR: evaluates a Python expression over the daemon's stats JSON
# (d), e.g. idle regions: sum(c['clean']+c['dirty'] for c in d['classes']).
stats_get() {
    in_ns zknallocctl stats --json 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" 2>/dev/null
}
IDLE="sum(c['clean']+c['dirty'] for c in d['classes'])"
LENT="sum(c['lent'] for c in d['classes'])"
# Waits (at most 10 s) until nothing is being zeroed: returned regions idle.
settle() {
    for _ in $(seq 100); do
        [ "$(stats_get "d['pool']['zeroing']+d['pool']['dirty_bytes']")" = 0 ] && return 0
        sleep 0.1
    done
    return 1
}
wait_line() { # wait_line FILE REGEX SECONDS
    for _ in $(seq $(($3 * 10))); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

# ---- setup inside: users, sysusers, tmpfiles ----
setup_err=""
in_ns systemd-sysusers >"$T/setup.log" 2>&1 || setup_err="systemd-sysusers failed"
in_ns getent group zknalloc >/dev/null || setup_err="${setup_err:-sysusers did not create group zknalloc}"
# The THP snippet writes a kernel-wide setting that no namespace isolates:
# it is applied to a stand-in for /sys/kernel/mm/transparent_hugepage.
if ! in_ns sh -c 'd=/sys/kernel/mm/transparent_hugepage; [ -d $d ] || exit 0
        cat $d/shmem_enabled > /run/shmem_enabled.real && mount -t tmpfs zkn-thp $d &&
        cp /run/shmem_enabled.real $d/shmem_enabled &&
        systemd-tmpfiles --create /usr/local/share/zknalloc/zknalloc-thp.conf &&
        grep -q "^advise" $d/shmem_enabled; r=$?; umount $d; exit $r' >>"$T/setup.log" 2>&1; then
    setup_err="${setup_err:-systemd-tmpfiles did not apply zknalloc-thp.conf}"
fi
in_ns useradd -M -N -g users -G zknalloc -s /bin/sh zknlive1 >>"$T/setup.log" 2>&1 &&
in_ns useradd -M -N -g users -G zknalloc -s /bin/sh zknlive2 >>"$T/setup.log" 2>&1 &&
in_ns useradd -M -N -g users -s /bin/sh zknlive3 >>"$T/setup.log" 2>&1 ||
    setup_err="${setup_err:-useradd failed}"
in_ns systemctl daemon-reload >>"$T/setup.log" 2>&1 || setup_err="${setup_err:-daemon-reload failed}"
if [ -n "$setup_err" ]; then
    fail "0 setup: $setup_err" "$(cat "$T/setup.log")"
    echo "$passed passed, $failed failed"
    exit 1
fi
echo "test-systemd: installed $(ls "$T/stage/usr/local/sbin") $(ls "$T/stage/usr/local/bin") libzknalloc.so.0; sysusers and tmpfiles applied; users zknlive1, zknlive2 (group zknalloc), zknlive3 (not)"

# ---- 1. socket activation ----
t1() {
    local n="1 socket activation" out mode pid
    in_ns systemctl enable --now zknallocd.socket >"$T/t1.log" 2>&1 ||
        { fail "$n: systemctl enable --now zknallocd.socket failed" "$(cat "$T/t1.log")"; return; }
    [ "$(show ActiveState zknallocd.socket)" = active ] ||
        { fail "$n: zknallocd.socket is $(show ActiveState zknallocd.socket), not active"; return; }
    [ "$(show ActiveState)" = inactive ] && ! in_ns pgrep -x zknallocd >/dev/null ||
        { fail "$n: zknallocd runs before any client connected (service $(show ActiveState))"; return; }
    mode=$(in_ns stat -c '%A %U %G' "$SYSSOCK" 2>&1)
    [ "$mode" = "srw-rw---- zknalloc zknalloc" ] ||
        { fail "$n: $SYSSOCK is '$mode', expected 'srw-rw---- zknalloc zknalloc' (docs/systemd.md)"; return; }
    out=$(in_ns zknallocctl ping 2>&1) ||
        { fail "$n: first client connection failed: $out" "$(journal_tail zknallocd.service)"; return; }
    pid=$(show MainPID)
    if [ "$(show ActiveState)" = active ] && [ "${pid:-0}" -gt 0 ] && in_ns pgrep -x zknallocd >/dev/null; then
        ok "$n: socket listening ($mode), daemon not running; 'zknallocctl ping' started zknallocd.service (MainPID $pid)"
    else
        fail "$n: after '$out' the service is $(show ActiveState), MainPID ${pid:-none}" "$(journal_tail zknallocd.service)"
    fi
}

# ---- 2. Type=notify, READY=1 and STATUS= ----
t2() {
    local n="2 Type=notify" type sub status
    type=$(show Type); sub=$(show SubState); status=$(show StatusText)
    if [ "$type" != notify ]; then
        fail "$n: Type=$type"
    elif [ "$(show ActiveState)/$sub" != active/running ]; then
        fail "$n: $(show ActiveState)/$sub, not active/running (no READY=1?)" "$(journal_tail zknallocd.service)"
    elif ! [[ $status =~ ^pool\ .*MiB\ idle.*lent.*backing ]]; then
        fail "$n: StatusText='$status' is not the daemon's STATUS= line"
    else
        ok "$n: active/running after READY=1; StatusText=\"$status\""
    fi
}

# ---- 3. group access ----
t3() {
    local n="3 group access" out rc
    out=$(as_user zknlive1 zknallocctl stats 2>&1); rc=$?
    [ $rc -eq 0 ] || { fail "$n: member zknlive1 of group zknalloc: zknallocctl stats exited $rc" "$out"; return; }
    out=$(as_user zknlive3 zknallocctl stats 2>&1); rc=$?
    if [ $rc -eq 2 ] && grep -qi "permission denied" <<<"$out"; then
        ok "$n: member zknlive1 connects (stats exit 0); outsider zknlive3 refused (exit 2, permission denied)"
    else
        fail "$n: outsider zknlive3: zknallocctl stats exited $rc (documented: 2, permission denied)" "$out"
    fi
}

# ---- 4. warm restart while a holder keeps writing ----
t4() {
    local n="4 warm restart under a live client" stop=/tmp/zkn-live-stop4 ho=$T/holder4.out
    local notes=() errs=() r scans=() done_line
    in_ns rm -f "$stop"
    TMO=90 as_user zknlive1 "${PRELOAD[@]}" $HOLDER hold 4 8 "$stop" 60 >"$ho" 2>&1 &
    JOBS+=($!); local hj=$!
    if ! wait_line "$ho" '^ready' 15; then
        fail "$n: the holder did not get its blocks" "$(cat "$ho")"; return
    fi
    grep -q 'daemon_blocks 4$' "$ho" ||
        errs+=("the holder's blocks are not daemon regions: $(grep '^ready' "$ho")")
    sleep 0.3
    local pid0; pid0=$(show MainPID)
    r=$(in_ns systemctl restart zknallocd.service 2>&1) || errs+=("systemctl restart failed: $r")
    notes+=("restart: MainPID $pid0 -> $(show MainPID)")
    sleep 0.5
    # Other processes, of another uid and of the holder's own, must never be
    # lent a region the holder still maps.
    scans+=("after restart, uid zknlive2: $(as_user zknlive2 "${PRELOAD[@]}" $HOLDER scan 16 8 2>&1)")
    scans+=("after restart, uid zknlive1: $(as_user zknlive1 "${PRELOAD[@]}" $HOLDER scan 16 8 2>&1)")
    sleep 0.3
    r=$(in_ns systemctl stop zknallocd.service 2>&1) || errs+=("systemctl stop failed: $r")
    sleep 0.5
    r=$(in_ns systemctl start zknallocd.service 2>&1) || errs+=("systemctl start failed: $r")
    notes+=("stop + start: MainPID $(show MainPID)")
    sleep 0.5
    scans+=("after stop+start, uid zknlive2: $(as_user zknlive2 "${PRELOAD[@]}" $HOLDER scan 16 8 2>&1)")
    scans+=("after stop+start, uid zknlive1: $(as_user zknlive1 "${PRELOAD[@]}" $HOLDER scan 16 8 2>&1)")
    sleep 0.3
    in_ns touch "$stop"
    wait_line "$ho" '^done' 15 || errs+=("the holder did not finish")
    wait "$hj" 2>/dev/null
    done_line=$(grep '^done' "$ho")
    local scan
    for scan in "${scans[@]}"; do
        local last who; last=$(tail -n 1 <<<"$scan"); who=${scan%%:*}
        notes+=("scan $who: ${last#"$who: "}")
        [[ $last =~ scan\ blocks\ 16\ daemon_blocks\ ([0-9]+)\ marked_words\ ([0-9]+)$ ]] ||
            { errs+=("scanner ($who) failed: $scan"); continue; }
        [ "${BASH_REMATCH[1]}" -gt 0 ] || errs+=("scanner ($who) got no daemon regions (all private fallback)")
        [ "${BASH_REMATCH[2]}" -eq 0 ] || errs+=("another process ($who) was lent the holder's live blocks: $(grep -m3 . <<<"$scan" | tr '\n' ' ')")
    done
    if [[ $done_line =~ ^done\ rounds\ ([0-9]+)\ mismatches\ ([0-9]+) ]]; then
        [ "${BASH_REMATCH[1]}" -ge 20 ] || errs+=("the holder checked only ${BASH_REMATCH[1]} rounds")
        [ "${BASH_REMATCH[2]}" -eq 0 ] ||
            errs+=("the holder's blocks changed under it in ${BASH_REMATCH[2]} rounds: $done_line" \
                   "$(grep -m4 '^mismatch' "$ho")")
    else
        errs+=("no result from the holder: $(tail -n 3 "$ho")")
    fi
    if [ ${#errs[@]} -eq 0 ]; then
        ok "$n: 4 x 8 MiB checked every 50 ms across restart and stop+start, intact ($done_line); no other process (other uid, same uid) was lent any of it"
    else
        fail "$n: ${errs[0]}" "${errs[@]:1}" "${notes[@]}"
    fi
}

# ---- 5. fd store ----
t5() {
    local n="5a fd store after trim" idle restored nfd errs=() r
    # Some idle regions: a member's process takes them and exits.
    as_user zknlive1 "${PRELOAD[@]}" $HOLDER scan 6 8 >/dev/null 2>&1
    settle
    idle=$(stats_get "$IDLE")
    r=$(in_ns systemctl restart zknallocd.service 2>&1) || errs+=("systemctl restart failed: $r")
    settle
    restored=$(stats_get "d['totals']['restored']")
    nfd=$(in_ns /opt/zkn-live/fdstore-count)
    local ctx="idle regions before restart ${idle:-?}, restored ${restored:-?}, NFileDescriptorStore after restart ${nfd:-?}"
    [ "${restored:-0}" -gt 0 ] || errs+=("restart did not hand the pool back: $ctx")
    r=$(in_ns zknallocctl trim --to 0 2>&1) || errs+=("zknallocctl trim --to 0 failed: $r")
    sleep 0.3
    idle=$(stats_get "$IDLE"); nfd=$(in_ns /opt/zkn-live/fdstore-count)
    if [ -z "$nfd" ]; then
        errs+=("the manager reports no fd store count (NFileDescriptorStore, systemd-analyze dump)")
    elif [ "$nfd" -gt "${idle:-0}" ]; then
        errs+=("after trim --to 0 the pool holds ${idle:-?} idle regions but the manager still pins $nfd fds for the unit ($ctx)")
    fi
    if [ ${#errs[@]} -eq 0 ]; then
        ok "$n: $ctx; after trim --to 0: idle $idle, NFileDescriptorStore $nfd"
    else
        fail "$n: ${errs[0]}" "${errs[@]:1}"
    fi

    n="5b fd store at stop"; errs=()
    local stop=/tmp/zkn-live-stop5 ho=$T/holder5.out lent at_stop after
    in_ns rm -f "$stop" /run/zkn-live/fdstore-at-stop
    in_ns systemctl start zknallocd.service >/dev/null 2>&1
    local inv; inv=$(show InvocationID)
    # Regions lent to a live process, and idle ones in the pool.
    TMO=90 as_user zknlive1 "${PRELOAD[@]}" $HOLDER hold 2 8 "$stop" 60 >"$ho" 2>&1 &
    JOBS+=($!); local hj=$!
    wait_line "$ho" '^ready' 15 || errs+=("the holder did not start: $(cat "$ho")")
    as_user zknlive2 "${PRELOAD[@]}" $HOLDER scan 3 4 >/dev/null 2>&1
    settle
    idle=$(stats_get "$IDLE"); lent=$(stats_get "$LENT")
    local before; before=$(in_ns /opt/zkn-live/fdstore-count)
    [ "$(show InvocationID)" = "$inv" ] ||
        errs+=("the service stopped or restarted by itself during the setup (InvocationID changed)")
    r=$(in_ns systemctl stop zknallocd.service 2>&1) || errs+=("systemctl stop failed: $r")
    at_stop=$(in_ns cat /run/zkn-live/fdstore-at-stop 2>/dev/null | tail -n 1)
    after=$(in_ns /opt/zkn-live/fdstore-count)
    local what="idle regions ${idle:-?}, lent ${lent:-?}; fds held before stop ${before:-?}, at stop ${at_stop:-?}, after stop ${after:-?}"
    [ "${lent:-0}" -gt 0 ] && [ "${idle:-0}" -gt 0 ] || errs+=("setup: expected idle and lent regions: $what")
    [ "${at_stop:-x}" = "${idle:-y}" ] ||
        errs+=("the manager held ${at_stop:-?} fds at stop, expected exactly the ${idle:-?} idle pooled regions: $what" \
               "(the daemon added $(( ${at_stop:-0} - ${before:-0} )) at stop, with ${idle:-?} idle and ${lent:-?} lent regions; ${before:-?} were pinned before)")
    [ "${after:-0}" -le "${idle:-0}" ] || errs+=("after stop the manager holds $after fds: $what")
    in_ns touch "$stop"
    wait_line "$ho" '^done' 15
    wait "$hj" 2>/dev/null
    in_ns systemctl start zknallocd.service >/dev/null 2>&1
    if [ ${#errs[@]} -eq 0 ]; then
        local note=""
        [ "$after" = 0 ] && note=" (this systemd empties the store once the unit is stopped)"
        ok "$n: $what$note"
    else
        fail "$n: ${errs[0]}" "${errs[@]:1}" \
            "$(in_ns journalctl --no-pager -q -o cat -u zknallocd.service | grep -i 'fd store' | tail -n 2 | sed 's/^/| /')"
    fi
}

# ---- 6. user units ----
t6() {
    local n="6 user units" uid rt out rc U mode scan
    uid=$(in_ns id -u zknlive1); rt=/run/user/$uid
    if ! TMO=40 in_ns systemctl start "user@$uid.service" >"$T/t6.log" 2>&1; then
        echo "skip $n: user@$uid.service cannot run in this container: $(head -n1 "$T/t6.log"); $(in_ns journalctl --no-pager -q -o cat -n 3 -u "user-runtime-dir@$uid.service" -u "user@$uid.service" 2>/dev/null | tr '\n' ' ')"
        return
    fi
    U=(env XDG_RUNTIME_DIR="$rt")
    out=$(as_user zknlive1 "${U[@]}" systemctl --user start zknallocd.socket 2>&1) ||
        { fail "$n: systemctl --user start zknallocd.socket: $out"; return; }
    [ "$(as_user zknlive1 "${U[@]}" systemctl --user show -P ActiveState zknallocd.service)" = inactive ] ||
        { fail "$n: the user daemon ran before any client connected"; return; }
    mode=$(in_ns stat -c '%A %U' "$rt/zknalloc/zknallocd.sock" 2>&1)
    [ "$mode" = "srw------- zknlive1" ] || { fail "$n: $rt/zknalloc/zknallocd.sock is '$mode'"; return; }
    # No ZK_NALLOC_SOCKET: the shared rule must find $XDG_RUNTIME_DIR's socket.
    out=$(as_user zknlive1 "${U[@]}" zknallocctl ping 2>&1); rc=$?
    [ $rc -eq 0 ] && grep -q "$rt/zknalloc/zknallocd.sock" <<<"$out" ||
        { fail "$n: zknallocctl ping as zknlive1 exited $rc: $out"; return; }
    scan=$(as_user zknlive1 "${U[@]}" LD_PRELOAD=/usr/local/lib/libzknalloc.so.0 $HOLDER scan 2 8 2>&1 | tail -n1)
    [[ $scan =~ daemon_blocks\ 2 ]] || { fail "$n: a preloaded client did not get the user daemon's regions: $scan"; return; }
    out=$(as_user zknlive1 "${U[@]}" systemctl --user show -P ActiveState zknallocd.service)
    [ "$out" = active ] || { fail "$n: user zknallocd.service is '$out' after a client connected"; return; }
    out="active, StatusText \"$(as_user zknlive1 "${U[@]}" systemctl --user show -P StatusText zknallocd.service)\""

    rc=0; as_user zknlive2 env ZK_NALLOC_SOCKET="$rt/zknalloc/zknallocd.sock" zknallocctl ping >/dev/null 2>&1 || rc=$?
    [ $rc -eq 2 ] || { fail "$n: another user reached zknlive1's daemon (ping exit $rc)"; return; }
    ok "$n: user@$uid socket ($mode) activated by 'zknallocctl ping' on $rt/zknalloc/zknallocd.sock; preloaded client got daemon regions; service $out; other users refused"
}

t1; t2; t3; t4; t5; t6
echo "test-systemd: finished in $(( $(date +%s) - t_start )) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
