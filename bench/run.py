#!/usr/bin/env python3
"""Benchmark driver for zk-nalloc (issue 5). Python 3 standard library only.

    python3 bench/run.py full  [--build build] [--out bench/results] [--peers-only]
    python3 bench/run.py quick [--build build] [--out bench/results/quick]
        [--only VARIANT,...] [--progs FAMILY,...] [--real-proofs groth16:5,plonk:3]
    (families: fft burst msm grow contention cold prover small lend fork real)
    python3 bench/run.py demo  [--build build]

Every measurement is its own process, with the allocator under test swapped in
by LD_PRELOAD and checked by the program itself (it exits 3 when malloc does
not come from the expected library). Each program also measures the physical
floor: the same writes into memory that is already faulted in and kept.
Results: results.md (tables), results.png (gnuplot chart), results.json (raw
samples) and machine.txt in the output folder.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from figures import num  # bench/figures.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------- variants


LIB_DIRS = []  # --lib-dir: searched before anything else


def find_lib(names):
    """Path of the first shared library found among names (--lib-dir, ldconfig, then the usual
    dirs)."""
    for d in LIB_DIRS:
        for name in names:
            if os.path.exists(os.path.join(d, name)):
                return os.path.join(d, name)
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    want_arch = "x86-64" if platform.machine() == "x86_64" else ""
    for name in names:
        for line in out.splitlines():
            left, sep, path = line.strip().partition(" => ")
            if sep and left.split(" ")[0] == name and want_arch in left and os.path.exists(path):
                return path
        for d in ("/usr/lib/%s-linux-gnu" % platform.machine(), "/usr/lib64", "/usr/lib"):
            p = os.path.join(d, name)
            if os.path.exists(p):
                return p
    return None


class Variant:
    """behind: an allocator preloaded after lib, which then serves lib's small
    requests (client/next_alloc.c); real_only: run by bench/real only."""
    def __init__(self, name, expect, lib, env=None, daemon=False, peer=True, thp=False,
                 behind=None, real_only=False):
        self.name, self.expect, self.lib = name, expect, lib
        self.env = env or {}
        self.daemon, self.peer, self.thp = daemon, peer, thp
        self.behind, self.real_only = behind, real_only
        self.skip = None  # reason when it cannot run

    def __repr__(self):
        return self.name


def make_variants(build, peers_only):
    je = find_lib(["libjemalloc.so.2"])
    mi = find_lib(["libmimalloc.so.2", "libmimalloc.so.2.0", "libmimalloc.so"])
    tc = find_lib(["libtcmalloc_minimal.so.4", "libtcmalloc.so.4"])
    zk = os.path.join(build, "libzknalloc.so")
    zkd = os.path.join(build, "zknallocd")
    vs = [
        Variant("glibc", "glibc", None),
        Variant("glibc+thp", "glibc", None, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, thp=True),
        Variant("jemalloc", "jemalloc", je),
        Variant("jemalloc+thp", "jemalloc", je, {"MALLOC_CONF": "thp:always"}, thp=True),
        Variant("mimalloc", "mimalloc", mi),
        Variant("mimalloc+thp", "mimalloc", mi, {"MIMALLOC_LARGE_OS_PAGES": "1"}, thp=True),
        Variant("tcmalloc", "tcmalloc", tc),
        Variant("zk-nalloc", "zknalloc", zk, peer=False),
        Variant("zk-nalloc+daemon", "zknalloc", zk, daemon=True, peer=False),
        # Small requests to tcmalloc instead of glibc: for provers whose small
        # allocations cost (bench/real's plonk).
        Variant("zk-nalloc/tcmalloc", "zknalloc", zk, peer=False, behind=tc, real_only=True),
        Variant("zk-nalloc+daemon/tcmalloc", "zknalloc", zk, daemon=True, peer=False, behind=tc,
                real_only=True),
    ]
    for v in vs:
        if v.expect != "glibc" and (not v.lib or not os.path.exists(v.lib)):
            v.skip = "not built" if not v.peer else "not installed (see bench/ensure-peers.sh)"
        if v.real_only and not v.skip and not (v.behind and os.path.exists(v.behind)):
            v.skip = "tcmalloc not installed (see bench/ensure-peers.sh)"
        if not v.peer and peers_only:
            v.skip = "skipped (--peers-only)"
        if v.daemon and not v.skip and not os.access(zkd, os.X_OK):
            v.skip = "not built (no %s)" % zkd
    return vs


# ------------------------------------------------------------------- daemon

MAGIC = 0x314E4B5A
PROTO_VERSION = 2  # proto/zkn_proto.h ZKN_PROTO_VERSION (version 1 is no longer spoken)
T_HELLO, T_HELLO_OK, T_STATS, T_STATS_REPLY, T_ERROR, T_PING, T_PONG = 1, 2, 7, 8, 9, 12, 13


def _frame(mtype, payload=b"", req=1):
    return struct.pack("<IHHII", MAGIC, PROTO_VERSION, mtype, len(payload), req) + payload


def _connect(path, timeout=2.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(timeout)
    s.connect(path)
    return s


def daemon_ping(path):
    try:
        with _connect(path, 0.5) as s:
            s.send(_frame(T_PING))
            r = s.recv(65536)
            return len(r) >= 16 and struct.unpack("<IHHII", r[:16])[2] == T_PONG
    except OSError:
        return False


def daemon_stats(path):
    """The daemon's STATS reply as a dict, or None."""
    try:
        with _connect(path) as s:
            s.send(_frame(T_HELLO, struct.pack("<HHI", PROTO_VERSION, PROTO_VERSION, 0)))
            r = s.recv(65536)
            if struct.unpack("<IHHII", r[:16])[2] != T_HELLO_OK:
                return None
            s.send(_frame(T_STATS, req=2))
            r = s.recv(65536)
            if struct.unpack("<IHHII", r[:16])[2] != T_STATS_REPLY:
                return None
            return json.loads(r[16:].decode("utf-8", "replace"))
    except (OSError, ValueError, struct.error):
        return None


class Daemon:
    """zknallocd on a temporary socket, stopped on exit whatever happens."""

    def __init__(self, build, args, log_dir):
        self.build, self.args = build, list(args)
        self.dir = tempfile.mkdtemp(prefix="zkn-bench-")
        self.sock = os.path.join(self.dir, "zknallocd.sock")
        self.log_path = os.path.join(log_dir, "zknallocd.log")
        self.proc = None
        self.warmed = False
        self.prewarm_bytes = 0
        for i, a in enumerate(self.args):
            if a == "--prewarm" and i + 1 < len(self.args):
                size, count = self.args[i + 1].split("=")
                self.prewarm_bytes += parse_size(size) * int(count)

    def __enter__(self):
        log = open(self.log_path, "ab")
        log.write(("\n== %s zknallocd --socket %s %s\n" %
                   (time.strftime("%H:%M:%S"), self.sock, " ".join(self.args))).encode())
        log.flush()
        self.proc = subprocess.Popen([os.path.join(self.build, "zknallocd"), "--socket", self.sock] +
                                     self.args, stdout=log, stderr=log, env=clean_env({}))
        log.close()
        # It prewarms before it answers: on 2 busy cores about 10 s per GiB.
        wait_s = 15 + 12 * self.prewarm_bytes / (1 << 30)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("zknallocd exited with %s; see %s" % (self.proc.returncode,
                                                                          self.log_path))
            if os.path.exists(self.sock) and daemon_ping(self.sock):
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("zknallocd did not answer PING within %.0f s; see %s" % (wait_s,
                                                                                       self.log_path))
        self.wait_warm()
        self.warmed = True
        return self

    def wait_warm(self, timeout=30):
        """Waits until the prewarmed regions are clean and nothing is being zeroed."""
        deadline = time.monotonic() + timeout
        want = self.prewarm_bytes
        while time.monotonic() < deadline:
            st = daemon_stats(self.sock)
            if st is None:
                time.sleep(0.2)
                continue
            pool = st.get("pool", {})
            cap = st.get("caps", {}).get("pool_bytes", want)
            if pool.get("clean_bytes", 0) >= min(want, cap) and not pool.get("zeroing", 0) \
                    and not pool.get("dirty_bytes", 0):
                return st
            if self.warmed and not pool.get("zeroing", 0) and not pool.get("dirty_bytes", 0):
                return st
            time.sleep(0.1)
        return None

    def wait_settled(self, timeout=30):
        """Waits until the daemon zeroes and prepares nothing: what a process
        taught it is ready, and its background work is not in the next one's way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pool = (daemon_stats(self.sock) or {}).get("pool")
            if pool is not None and not pool.get("zeroing", 0) and not pool.get("dirty_bytes", 0) \
                    and not pool.get("preparing_bytes", 0):
                return True
            time.sleep(0.1)
        return False

    def stats(self):
        return daemon_stats(self.sock)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, *exc):
        self.stop()


def parse_size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip()
    if text and text[-1].upper() in mult:
        return int(text[:-1]) * mult[text[-1].upper()]
    return int(text)


# ------------------------------------------------------------------ running

SCRUB = ("LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_CONF", "ZK_NALLOC_SOCKET", "ZK_NALLOC_CACHE_BYTES",
         "ZK_NALLOC_SHOW_STATS", "ZKB_EXPECT")


def clean_env(extra):
    env = {k: v for k, v in os.environ.items()
           if k not in SCRUB and not k.startswith(("MIMALLOC_", "TCMALLOC_", "JE_", "MALLOC_"))}
    env.update(extra)
    return env


class Runner:
    def __init__(self, build, out, verbose=True):
        self.build, self.out, self.verbose = build, out, verbose
        self.results = []  # dicts: bench, case, variant, samples, floor, extra...
        self.errors = []
        self.nosock = os.path.join(tempfile.gettempdir(), "zkn-bench-no-daemon-%d.sock" % os.getpid())
        self.daemon = None  # Daemon in force for +daemon variants
        self.shared = None  # the running Daemon, if any
        self.fresh_daemons = False
        self.family_started = False  # a fresh daemon was started for this family
        self.daemon_args = DAEMON_ARGS  # the +daemon variants' daemon, unless a family needs another

    def daemon_for(self, fresh, args=None):
        args = args or self.daemon_args
        if self.shared and ((fresh and not self.family_started) or self.shared.args != args):
            self.stop_daemon()
        if self.shared is None:
            self.shared = Daemon(self.build, args, self.out).__enter__()
            self.family_started = True
        else:
            self.shared.wait_warm()
        return self.shared

    def stop_daemon(self):
        if self.shared:
            self.daemon_stats_after = self.shared.stats()
            self.shared.stop()
            self.shared = None

    def env_for(self, v):
        e = {"ZKB_EXPECT": v.expect}
        e.update(v.env)
        if v.lib:
            e["LD_PRELOAD"] = os.path.abspath(v.lib)
            if v.behind:
                e["LD_PRELOAD"] += " " + os.path.abspath(v.behind)
        if v.expect == "zknalloc":
            e["ZK_NALLOC_SHOW_STATS"] = "1"  # parsed below: proves where memory came from
        if v.expect == "zknalloc" or v.daemon:
            # Without a daemon: a socket path where nothing listens, so neither a
            # system nor a per-user daemon is used by accident.
            e["ZK_NALLOC_SOCKET"] = self.daemon.sock if (v.daemon and self.daemon) else self.nosock
        return e

    def run(self, v, prog, args, timeout=300, record=True, label=None):
        """Runs one program under variant v; returns its parsed result lines.
        Since protocol 2 a +daemon run may get some blocks from private memory
        (a class the daemon has nothing ready of is answered not_warm at once):
        only a run that never got a daemon block fails, and the share of misses
        the daemon served is reported (the zk-nalloc column)."""
        argv = [os.path.join(self.build, "bench", prog)] + [str(a) for a in args]
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, env=clean_env(self.env_for(v)), capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(v, prog, args, "timed out after %d s" % timeout)
            return []
        return self.parse(v, prog, args, p.returncode, p.stdout, p.stderr, time.monotonic() - t0,
                          record, label)

    def run_together(self, v, prog, args, procs, timeout=300, label=None):
        """Starts procs processes of one program under variant v, lets them
        begin their timed work at the same moment (bench_wait_gate: they wait
        until the pipe's write end is closed) and returns one row per process
        that succeeded; none is recorded. A process that fails fails the lot."""
        argv = [os.path.join(self.build, "bench", prog)] + [str(a) for a in args]
        gate_r, gate_w = os.pipe()
        env = clean_env(self.env_for(v))
        env["ZKB_GATE_FD"] = str(gate_r)
        outs, running = [], []
        try:
            for _ in range(procs):
                f_out, f_err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
                outs.append((f_out, f_err))
                running.append(subprocess.Popen(argv, env=env, stdout=f_out, stderr=f_err,
                                                pass_fds=(gate_r,)))
            # Each has loaded its allocator and set up before it reads the gate;
            # a fixed pause is enough for that (ms per process).
            time.sleep(0.2 + 0.02 * procs)
        finally:
            os.close(gate_r)
            os.close(gate_w)  # EOF: every process starts now
        t0 = time.monotonic()
        deadline = t0 + timeout
        for p in running:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        wall = time.monotonic() - t0
        rows, failed = [], False
        for p, (f_out, f_err) in zip(running, outs):
            f_out.seek(0)
            f_err.seek(0)
            got = self.parse(v, prog, args, p.returncode, f_out.read(), f_err.read(), wall, False,
                             label)
            f_out.close()
            f_err.close()
            failed |= not got
            rows += got
        return [] if failed else rows

    def parse(self, v, prog, args, returncode, stdout, stderr, wall, record, label):
        err = stderr.strip()
        if returncode != 0:
            self.fail(v, prog, args, "exit %d: %s" % (returncode, err[-400:]))
            return []
        if "<jemalloc>" in err or "mimalloc: error" in err or "Invalid conf" in err:
            self.fail(v, prog, args, "allocator rejected its settings: %s" % err[-300:])
            return []
        zst = {}
        for line in err.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "zknalloc:" and parts[2].isdigit():
                zst[parts[1]] = int(parts[2])
        if v.expect == "zknalloc" and zst.get("misses", 0) > 0:
            used = zst.get("daemon_lends", 0) > 0
            if v.daemon and not used:
                self.fail(v, prog, args, "the daemon was not used (library stats: %s)" % zst)
                return []
            if not v.daemon and used:
                self.fail(v, prog, args, "a daemon was used in the no-daemon variant")
                return []
        lines = []
        for line in stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                d = json.loads(line)
                d["variant"] = v.name
                d["wall_s"] = wall
                if zst:
                    d["zk_stats"] = zst
                if label:
                    d["case"] = label
                lines.append(d)
                if record:
                    self.results.append(d)
        return lines

    def fail(self, v, prog, args, why):
        msg = "%s: %s %s: %s" % (v.name, prog, " ".join(map(str, args)), why)
        self.errors.append(msg)
        print("  ! " + msg, file=sys.stderr)

    def merge(self, rows):
        """Concatenates the samples of several processes into one result."""
        if not rows:
            return None
        first = dict(rows[0])
        first["samples"] = [x for r in rows for x in r["samples"]]
        if "floor" in first:
            first["floor"] = [x for r in rows for x in r.get("floor", [])]
        first["wall_samples"] = [r["wall_s"] for r in rows]
        for k in ("live_anon_huge_kb", "live_shmem_pmd_kb", "live_file_pmd_kb", "live_rss_kb"):
            if k in first:
                first[k] = int(statistics.median(r.get(k, 0) for r in rows))
        self.results.append(first)
        return first

    def add_up(self, rows, case, **extra):
        """One result for processes that ran the same repetitions together:
        repetition i's rate is the sum of every process's repetition i (they
        start at one gate and run equal work, so their repetitions overlap in
        time, all but the tail of the slowest)."""
        if not rows:
            return None
        n = min(len(r["samples"]) for r in rows)
        first = dict(rows[0], case=case, **extra)
        first["samples"] = [sum(r["samples"][i] for r in rows) for i in range(n)]
        if all(r.get("floor") for r in rows):
            m = min(len(r["floor"]) for r in rows)
            first["floor"] = [sum(r["floor"][i] for r in rows) for i in range(m)]
        first["wall_samples"] = [rows[0]["wall_s"]]
        self.results.append(first)
        return first


# -------------------------------------------------------------------- plans

PLANS = {
    "full": {
        "fft": [(8, 41, 3), (32, 31, 2), (128, 21, 2)],  # (MiB, reps, warmup)
        "burst": (11, 2), "msm": (11, 2), "grow": (11, 2),
        "contention": {"iters": 4, "reps": 5, "warm": 1},
        "cold": {"runs": 5, "idle_runs": 2, "idle_gap": 3.0,
                 "idle_variants": ["glibc", "glibc+thp", "zk-nalloc", "zk-nalloc+daemon"]},
        # (log2 n, rounds per repetition, repetitions, warm-up repetitions, processes)
        "prover": [(16, 4, 2, 1, 2), (18, 2, 2, 1, 2), (20, 1, 1, 1, 2), (22, 1, 2, 1, 1)],
        "small": (1000000, 3, 1, 5),  # ops, reps, warmup, processes
        "lend": [(2, 500, 50), (128, 200, 20)],
        # (live MiB, repetitions per fork kind, of which with the rewrites timed): a
        # rewrite after fork costs up to 25 s per GiB here with 4 KiB copy-on-write
        # faults (glibc), so it is timed at 512 MiB only
        "fork": [(0, 5, 0), (512, 5, 2), (2048, 2, 0)],
        "real": "full",  # bench/real/real.py's plan: snarkjs groth16 x9 + plonk x3, 2^16
        "variants": None,  # all
    },
    "quick": {
        "fft": [(32, 5, 1), (128, 5, 1)],
        "burst": (5, 1), "msm": (5, 1), "grow": (5, 1),
        "contention": {"iters": 2, "reps": 3, "warm": 1, "threads": "nproc"},
        "cold": {"runs": 2, "idle_runs": 1, "idle_gap": 2.0, "idle_variants": ["zk-nalloc+daemon"]},
        "prover": [(18, 2, 2, 1, 1)],
        "small": (500000, 3, 1, 2),
        "lend": [(128, 100, 10)],
        "fork": [(0, 3, 0), (512, 3, 1)],
        "real": "quick",  # snarkjs groth16 x3 + plonk x1, 2^14
        "warmup_mib": 512,
        "variants": ["glibc", "jemalloc", "mimalloc", "tcmalloc", "zk-nalloc",
                     "zk-nalloc+daemon", "zk-nalloc/tcmalloc", "zk-nalloc+daemon/tcmalloc"],
    },
    # Many cores (issue 12: 16 threads, 16 processes): contention in one process
    # of 1, 4 and nproc threads and in nproc processes of one thread; cold start
    # in nproc processes at once. The daemon is sized for them: every process's
    # 1 GiB of 128 MiB blocks and 64 MiB blocks warm (scale_daemon_args).
    "scale": {
        "progs": ["contention", "cold"],
        "contention": {"iters": 4, "reps": 5, "warm": 1, "threads": [1, 4, "nproc"],
                       "procs": "nproc"},
        "cold": {"runs": 3, "procs": "nproc", "idle_runs": 2, "idle_gap": 3.0,
                 "idle_variants": ["glibc", "zk-nalloc", "zk-nalloc+daemon"]},
        # warm-up: nproc processes at once touch 1 GiB each, so that no variant meets fresh memory
        "variants": None,
    },
}

# The pool cap is raised from its default (min(RAM/8, 1 GiB)) to 2 GiB so that the
# prewarmed 1 GiB of 128 MiB regions does not fill it: at the cap, regions of
# other classes are destroyed on RETURN and every LEND of them creates one anew.
DAEMON_ARGS = ["--prewarm", "128M=8", "--pool-bytes", "2G"]
# fork: blocks of 64 MiB, from a daemon with all the blocks one fork process will use
# warm (a LEND of a class with no region ready falls back to private memory), since
# the blocks live at a fork are forgotten by the daemon.
FORK_BLOCK_MIB = 64


def scale_daemon_args(procs):
    """A daemon for procs processes at once: each one's 1 GiB of 128 MiB blocks
    (cold start) and one 64 MiB block (contention) warm, with room for them."""
    return ["--prewarm", "128M=%d" % (8 * procs), "--prewarm", "64M=%d" % procs,
            "--pool-bytes", "%dM" % (1024 * procs + 64 * procs + 256)]


def fork_daemon_args(mib):
    n = max(1, mib // FORK_BLOCK_MIB)
    return ["--prewarm", "%dM=%d" % (FORK_BLOCK_MIB, n), "--pool-bytes", "%dM" % ((n + 4) * FORK_BLOCK_MIB)]


FAMILIES = ("fft", "burst", "msm", "grow", "contention", "cold", "prover", "small", "lend", "fork",
            "real")

T0 = time.monotonic()


def section(title):
    print("\n== [%3.0fs] %s" % (time.monotonic() - T0, title), flush=True)


def fmt_stat(xs, unit):
    med = statistics.median(xs)
    return "%s (%s-%s) %s" % (num(med), num(min(xs)), num(max(xs)), unit)


def progress(d):
    if not d:
        return
    unit = d["unit"]
    line = "  %-18s %-26s %s" % (d["variant"], d["case"], fmt_stat(d["samples"], unit))
    if d.get("floor"):
        line += "   floor %s" % fmt_stat(d["floor"], unit)
    print(line, flush=True)


def with_daemon_for(runner, v, fn, args=None):
    """Runs fn() with the run's daemon when v needs one: a fresh, prewarmed one per
    family when runner.fresh_daemons, else one shared by the whole run (waited on
    until it has zeroed everything returned to it); args: that daemon's options
    when the family needs others than DAEMON_ARGS (a daemon with other options
    is replaced)."""
    if not v.daemon:
        return fn()
    d = runner.daemon_for(runner.fresh_daemons, args)
    runner.daemon = d
    try:
        return fn()
    finally:
        runner.daemon = None


def bench_all(runner, variants, plan):
    nproc = os.cpu_count() or 1

    def count(n):
        """A plan's count: a number, or "nproc" for this machine's cores."""
        return nproc if n == "nproc" else n

    cold_procs = count(plan["cold"].get("procs"))
    live = [v for v in variants if not v.skip and not v.real_only]

    progs = plan.get("progs")

    def want(fam):
        return not progs or fam in progs

    def each(title, fn, fam, own_daemon=False):
        if not want(fam):
            return
        section(title)
        runner.family_started = False
        for v in variants:
            if v.skip and not v.real_only:
                print("  %-18s %s" % (v.name, v.skip))
        for v in live:
            try:
                if own_daemon:
                    fn(v)
                else:
                    with_daemon_for(runner, v, lambda: fn(v))
            except RuntimeError as e:
                runner.fail(v, title, [], str(e))

    # Memory this VM has never touched can cost far more to fault the first
    # time (the hypervisor backs it then); touch 2 GiB once so that no variant
    # pays for being first.
    warmup_mib = plan.get("warmup_mib", 2048)
    # (a variant that needs no daemon: none is running yet)
    warm_v = next((v for v in live if not v.daemon), Variant("glibc", "glibc", None))
    if cold_procs:
        section("warm-up: %d processes at once touch 1 GiB each" % cold_procs)
        runner.run_together(warm_v, "coldstart", [1024, 128], cold_procs)
    else:
        section("warm-up: %d MiB touched once by a throwaway process" % warmup_mib)
        runner.run(warm_v, "coldstart", [warmup_mib, 128], record=False)

    def fft(v):
        for mib, reps, warm in plan["fft"]:
            r = runner.run(v, "zk_patterns", ["fft", mib, reps, warm])
            progress(r[0] if r else None)
    each("FFT loop: allocate N MiB, fill every byte, free (us per iteration)", fft, "fft")

    def taught(v, args):
        """+daemon: one untimed process of the same case first, then the daemon's
        background work awaited, so the measured process meets a daemon that has
        served one like it (a service's steady state; cold start measures a
        process that meets a fresh one)."""
        if v.daemon and runner.daemon:
            runner.run(v, "zk_patterns", args, record=False)
            runner.daemon.wait_settled()
        return runner.run(v, "zk_patterns", args)

    def burst(v):
        reps, warm = plan["burst"]
        for pat in ("burst", "burst-nowrite", "burst-small"):
            r = taught(v, [pat, reps, warm])
            progress(r[0] if r else None)
    each("phase burst: 8 x 16 MiB (written or not) or 64 x 512 KiB allocated, all freed "
         "(us per burst)", burst, "burst")

    def msm(v):
        reps, warm = plan["msm"]
        for pat in ("msm", "msm-loop"):
            r = taught(v, [pat, reps, warm])
            progress(r[0] if r else None)
    each("MSM buckets: 16 x 6 MiB calloc, 1% of lines read-modify-written, freed, with the "
         "floor's work between rounds or back to back (us)", msm, "msm")

    def grow(v):
        reps, warm = plan["grow"]
        r = runner.run(v, "zk_patterns", ["grow", reps, warm])
        progress(r[0] if r else None)
    each("growing buffer: realloc 1 -> 64 MiB doubling, new halves written, freed (us)", grow, "grow")

    c = plan["contention"]
    threads = c.get("threads", [1, 2, "nproc"])
    threads = sorted({count(t) for t in ([threads] if threads == "nproc" else threads)})
    cprocs = count(c.get("procs"))

    def contention(v):
        for t in threads:
            r = runner.run(v, "contention", [t, c["iters"], c["reps"], c["warm"]])
            progress(r[0] if r else None)
        if cprocs:
            rows = runner.run_together(v, "contention", [1, c["iters"], c["reps"], c["warm"]], cprocs)
            progress(runner.add_up(rows, "contention %d processes" % cprocs, procs=cprocs))
    each("contention: T threads loop alloc 64 MiB / write / free (aggregate GB/s)", contention, "contention")

    cold = plan["cold"]

    def cold_once(v, idle=None):
        """One cold start (cold_procs of them at once); idle: the gap before it."""
        if not cold_procs:
            return runner.run(v, "coldstart", [1024, 128], record=False,
                              label="cold start after %gs idle" % idle if idle else None)
        return runner.run_together(v, "coldstart", [1024, 128], cold_procs,
                                   label="cold start 1 GiB, %d processes at once%s" % (
                                       cold_procs, ", after %gs idle" % idle if idle else ""))

    def coldstart(v):
        rows = []
        # zk-nalloc+daemon runs take ~0.1 s, so it gets more of them (a tighter interval)
        for _ in range(cold["runs"] * (2 if v.daemon else 1)):
            rows += cold_once(v)
        progress(runner.merge(rows))
        if v.name in cold["idle_variants"]:
            rows = []
            for _ in range(cold["idle_runs"]):
                time.sleep(cold["idle_gap"])
                rows += cold_once(v, idle=cold["idle_gap"])
            progress(runner.merge(rows))
    each("cold start: fresh process allocates + fills 1 GiB in 128 MiB buffers (ms), "
         "runs back to back", coldstart, "cold")

    # Pure compute dominates, so the machine's background load would decide the
    # comparison: processes are interleaved across allocators (round robin), and
    # the arena floor is measured by the first allocator's process of each round.
    runner.family_started = False  # one fresh daemon for all sizes
    for logn, rounds, reps, warm, procs in (plan["prover"] if want("prover") else []):
        section("prover-shaped: Goldilocks NTT 2^%d, %d round(s) per repetition with per-round "
                "buffers (ms per repetition); %d process(es) per allocator, interleaved"
                % (logn, rounds, procs))
        rows = {v.name: [] for v in live}
        for k in range(procs):
            order = live[k % len(live):] + live[:k % len(live)]  # rotate who goes first
            for i, v in enumerate(order):
                try:
                    rows[v.name] += with_daemon_for(runner, v, lambda: runner.run(
                        v, "prover", [logn, rounds, reps, warm, 1 if i == 0 else 0], timeout=600,
                        record=False))
                except RuntimeError as e:
                    runner.fail(v, "prover", [logn], str(e))
        for v in live:
            r = rows[v.name]
            if r:
                d = runner.merge(r)
                d["maxrss_kb"] = max(x["maxrss_kb"] for x in r)
                progress(d)

    if want("small"):
        ops, reps, warm, rounds = plan["small"]
        section("small allocations < 64 KiB: malloc/free throughput (Mops/s); "
                "%d processes per allocator, interleaved" % rounds)
        runner.family_started = False
        rows = {v.name: [] for v in live}
        per_round = []  # {variant: median Mops/s of its process in this round}
        for k in range(rounds):
            this = {}
            for v in live[k % len(live):] + live[:k % len(live)]:  # rotate who goes first
                try:
                    r = with_daemon_for(
                        runner, v, lambda: runner.run(v, "small", [ops, reps, warm], record=False))
                    rows[v.name] += r
                    if r:
                        this[v.name] = med(r[0]["samples"])
                except RuntimeError as e:
                    runner.fail(v, "small", [], str(e))
            per_round.append(this)
        for v in live:
            d = runner.merge(rows[v.name])
            if d:
                # Throughput relative to glibc's process of the same round, then the median:
                # neighbours in time share the machine's load, which drifts over a run.
                d["vs_glibc_paired"] = [r[v.name] / r["glibc"] for r in per_round
                                        if v.name in r and r.get("glibc")]
            progress(d)

    section("LEND round trip including the map (raw protocol, no allocator preloaded)")
    dv = next((v for v in variants if v.daemon), None)
    zkd = os.path.join(runner.build, "zknallocd")
    why = None
    if not want("lend"):
        why = "not among --progs"
    elif dv is None:
        why = "no daemon variant in this run"
    elif dv.skip and "peers-only" in dv.skip:
        why = dv.skip
    elif not os.access(zkd, os.X_OK):
        why = "not built (no %s)" % zkd
    if why:
        print("  skipped: %s" % why)
    else:
        try:
            runner.family_started = False
            runner.daemon = runner.daemon_for(True)
            raw = Variant("protocol", "", None, daemon=True, peer=False)
            for mib, iters, touch in plan["lend"]:
                for row in runner.run(raw, "lend_rtt", [mib, iters, touch]):
                    s = sorted(row["samples"])
                    print("  %-26s median %s us  p99 %s us  (n=%d, backing %s)" % (
                        row["case"], num(statistics.median(s)), num(pctl(s, 99)), len(s),
                        row.get("backing")), flush=True)
            runner.daemon = None
        except RuntimeError as e:
            runner.fail(dv, "lend_rtt", [], str(e))

    # fork() with L live bytes (issue 10). Each fork gets a fresh set of blocks; the
    # daemon forgets the blocks live at a fork, and makes no new ones until asked (a
    # LEND it cannot answer at once falls back to private memory), so the +daemon
    # variant gets a fresh daemon for each live size and fork kind, prewarmed with
    # as many blocks as that process will use. Every run reports the share of its
    # live bytes that came from the daemon.
    def fork(v):
        for live, reps, rw_reps in plan["fork"]:
            for kind, sets in (("exec", reps), ("exit", reps), ("alive", rw_reps)):
                if sets == 0 or (kind == "alive" and live == 0):
                    continue
                runner.daemon = None
                if v.daemon and live:
                    runner.stop_daemon()
                    runner.family_started = False
                    runner.daemon = runner.daemon_for(True, fork_daemon_args(live * sets))
                try:
                    for d in runner.run(v, "fork", [live, reps, rw_reps, FORK_BLOCK_MIB, "/bin/true",
                                                    kind], timeout=240):
                        progress(d)
                finally:
                    runner.daemon = None
        runner.stop_daemon()
    each("fork() with L live bytes in %d MiB blocks: fork+exec, fork+_exit (ms), the parent "
         "rewriting them after (ms)" % FORK_BLOCK_MIB, fork, "fork", own_daemon=True)
    runner.stop_daemon()

    if want("real"):
        real_family(runner, variants, plan["real"], plan.get("real_proofs"))
        runner.stop_daemon()


def real_family(runner, variants, mode, proofs=None):
    """snarkjs proofs under each allocator (issue 12): bench/real/real.py, results in
    OUT/real/. Skipped with a one-line reason when it cannot run (no node or npm,
    no registry); never ends the whole run."""
    try:
        sys.path.insert(0, os.path.join(ROOT, "bench", "real"))
        import real
    except Exception as e:  # a broken family must not take the others with it
        section("real provers (bench/real)")
        print("  skipped: bench/real/real.py did not load: %s" % e)
        return
    try:
        runner.real_res = real.run_family(runner, variants, mode, sys.modules[__name__], proofs)
    except (OSError, RuntimeError, ValueError) as e:
        print("  real: stopped: %s" % e, file=sys.stderr)
        runner.errors.append("real: %s" % e)


def pctl(sorted_xs, p):
    if not sorted_xs:
        return float("nan")
    k = (len(sorted_xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


# ---------------------------------------------------------------- reporting

def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def machine_info():
    cpu = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    thp = "/sys/kernel/mm/transparent_hugepage/"
    pkgs = ""
    try:
        listed = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n",
                                 "libc6", "libjemalloc2", "libmimalloc2.0", "libtcmalloc-minimal4"],
                                capture_output=True, text=True).stdout.splitlines()
        # A package dpkg knows of but has not installed comes with no version.
        pkgs = ", ".join(line for line in listed if len(line.split()) == 2)
    except OSError:
        pass
    for d in LIB_DIRS:  # copied peers (--lib-dir): their versions, as the copier noted them
        noted = read(os.path.join(d, "VERSIONS.txt")).strip()
        pkgs += "; copied to %s: %s" % (d, noted.replace("\n", ", ") if noted else "versions not noted")
    # ZKB_COMMIT: a copy of the tree whose .git, if any, is not the one it was copied from
    commit = os.environ.get("ZKB_COMMIT", "")
    try:
        commit = commit or subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    hyper = "yes" if "hypervisor" in read("/proc/cpuinfo") else "no"
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "virtualized": hyper,
        "thp_enabled": read(thp + "enabled", "n/a"),
        "thp_shmem_enabled": read(thp + "shmem_enabled", "n/a"),
        "thp_defrag": read(thp + "defrag", "n/a"),
        "hugetlb_pages": next((l.split()[1] for l in read("/proc/meminfo").splitlines()
                               if l.startswith("HugePages_Total:")), "n/a"),
        "free_page_reporting_order": read("/sys/module/page_reporting/parameters/page_reporting_order",
                                          "n/a (no free page reporting)"),
        "packages": pkgs,
        "commit": commit,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg": " ".join(read("/proc/loadavg").split()[:3]),
    }


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def ratio_to_floor(d):
    """Slowdown against the floor: >1 means slower. Throughputs are inverted.

    Each repetition is followed by its floor in the same process, so the two
    share the machine's state of the moment: the ratio is the median of the
    per-repetition ratios (the ratio of medians when they cannot be paired)."""
    if not d or not d.get("floor"):
        return None
    xs, fs = d["samples"], d["floor"]
    if len(xs) == len(fs) and all(x > 0 for x in xs) and all(f > 0 for f in fs):
        if d.get("higher_is_better"):
            return med([f / x for x, f in zip(xs, fs)])
        return med([x / f for x, f in zip(xs, fs)])
    a, f = med(xs), med(fs)
    if d.get("higher_is_better"):
        return f / a if a else None
    return a / f if f else None


def paired_ratios(d):
    if not d or not d.get("floor") or len(d["samples"]) != len(d["floor"]):
        return None
    xs, fs = d["samples"], d["floor"]
    if not all(x > 0 for x in xs) or not all(f > 0 for f in fs):
        return None
    if d.get("higher_is_better"):
        return sorted(f / x for x, f in zip(xs, fs))
    return sorted(x / f for x, f in zip(xs, fs))


def median_ci(sorted_xs):
    """About 95% confidence interval of the median, from order statistics."""
    n = len(sorted_xs)
    if n < 3:
        return (sorted_xs[0], sorted_xs[-1]) if n else None
    half = 0.98 * n ** 0.5
    lo = max(0, int(n / 2 - half))
    hi = min(n - 1, int(-(-(n / 2 + half) // 1)) - 1)
    return sorted_xs[lo], sorted_xs[hi]


def cell(d, with_ratio=True):
    if not d:
        return "—"
    xs = d["samples"]
    s = "%s (%s–%s)" % (num(med(xs)), num(min(xs)), num(max(xs)))
    r = ratio_to_floor(d) if with_ratio else None
    if r is not None:
        s += " **%.2fx**" % r
    return s


def index(results):
    by = {}
    for d in results:
        by[(d["case"], d["variant"])] = d
    cases = []
    for d in results:
        if d["case"] not in cases:
            cases.append(d["case"])
    return by, cases


def best_peer(by, case, variants, key=lambda d: med(d["samples"]), higher=False):
    best = None
    for v in variants:
        d = by.get((case, v.name))
        if v.peer and d:
            if best is None or (key(d) > key(best) if higher else key(d) < key(best)):
                best = d
    return best


def targets(by, cases, variants, runner):
    """Rows (target, measured, verdict) for issue 5's targets."""
    rows = []
    zks = [v for v in variants if not v.peer and not v.skip]
    if not zks:
        return [("all zk-nalloc targets", "zk-nalloc " + next(
            (v.skip for v in variants if not v.peer), "not built"), "not measured")]

    def floor_verdict(ds, limit):
        """met / not met within noise / not met, for ratios against the floor."""
        worst, sure = 0.0, False
        for d in ds:
            r = ratio_to_floor(d)
            if r is None:
                return "not measured"
            worst = max(worst, r)
            pr = paired_ratios(d)
            ci = median_ci(pr) if pr else None
            if r > limit and (ci is None or ci[0] > limit):
                sure = True
        if worst <= limit:
            return "met"
        return "**not met**" if sure else "not met, within noise (the median's 95%% CI reaches %.2fx)" % limit

    def ratio_text(c, d):
        r = ratio_to_floor(d)
        if r is None:
            return "%s: —" % c
        pr = paired_ratios(d)
        ci = median_ci(pr) if pr else None
        word = "CI" if pr and len(pr) >= 3 else "range"
        return "%s %.2fx" % (c, r) + (" (%s %.2f–%.2f)" % ((word,) + tuple(ci)) if ci else "")

    def zk_rows(pred, title, limit):
        for v in zks:
            ds = [(c, by.get((c, v.name))) for c in cases if pred(c)]
            if ds:
                rows.append(("%s, %s: ≤ %.2fx floor" % (title, v.name, limit),
                             "; ".join(ratio_text(c, d) for c, d in ds),
                             floor_verdict([d for _, d in ds], limit)))

    zk_rows(lambda c: c.startswith("fft"), "FFT loop", 1.05)
    zk_rows(lambda c: c.startswith("burst "), "phase burst", 1.05)
    zk_rows(lambda c: c.startswith("contention"), "contention", 1.05)
    for c in ("msm 16x6 MiB calloc", "msm 16x6 MiB calloc back to back"):
        loop = c.endswith("back to back")
        bp = best_peer(by, c, variants)
        for v in zks:
            d = by.get((c, v.name))
            if not d or not bp:
                continue
            r = med(d["samples"]) / med(bp["samples"])
            # What one core needs to zero a round's 96 MiB (memset, measured in the same
            # process). A round is no shorter than the part of it left to the caller.
            zero = med(d["zeroing_us"]) if d.get("zeroing_us") else None
            target = 0.5 * med(bp["samples"])
            bound = ("; one core zeroes the round's 96 MiB in %s us, the target is %s us" %
                     (num(zero), num(target))) if zero else ""
            if loop:
                # The target is for rounds with work between them; with none,
                # the zeroing can only be split between the caller and one other core.
                verdict = "no target (rounds with no gap: shown for honesty)"
            else:
                verdict = "met" if r <= 0.5 else "**not met**"
            rows.append(("MSM buckets%s, %s: ≤ 0.5x best peer" % (" back to back" if loop else "",
                                                                 v.name),
                         "%s us vs %s %s us = %.2fx%s" % (num(med(d["samples"])), bp["variant"],
                                                           num(med(bp["samples"])), r, bound),
                         verdict))
    for c in [c for c in cases if c.startswith("cold start")]:
        d = by.get((c, "zk-nalloc+daemon"))
        bp = best_peer(by, c, variants)
        if d:
            vs = (", best peer %s %s ms (%.1fx slower than zk)" %
                  (bp["variant"], num(med(bp["samples"])), med(bp["samples"]) / med(d["samples"]))
                  if bp else "")
            rows.append(("%s, zk-nalloc+daemon: ≤ 1.30x floor" % c,
                         "%s ms; %s%s" % (num(med(d["samples"])), ratio_text("ratio", d), vs),
                         floor_verdict([d], 1.3)))
    pcases = [c for c in cases if c.startswith("prover")]
    cap = 1 << 30
    for v in zks:
        parts, ok, rss_parts, rss_ok = [], True, [], True
        for c in pcases:
            d, bp = by.get((c, v.name)), best_peer(by, c, variants)
            if not d or not bp:
                continue
            m, bm = med(d["samples"]), med(bp["samples"])
            # "beyond noise": every zk-nalloc repetition slower than every repetition of the
            # best peer (the ranges do not overlap), and by more than the spread the
            # allocators' medians show among themselves in this case (all should be equal)
            meds = [med(x["samples"]) for x in runner.results if x["case"] == c]
            spread = (max(meds) - min(meds)) / min(meds) if len(meds) > 1 else 0.03
            slower = min(d["samples"]) > max(bp["samples"]) and m > bm * (1 + max(0.03, spread) / 2)
            ok &= not slower
            parts.append("%s %.2fx" % (c.replace("prover NTT ", ""), m / bm))
            g = by.get((c, "glibc"))
            if g:
                over = (d["maxrss_kb"] - g["maxrss_kb"]) * 1024
                rss_ok &= over <= cap
                rss_parts.append("%s %+d MiB" % (c.replace("prover NTT ", ""), over >> 20))
        if parts:
            rows.append(("prover, %s: no slower than best peer beyond noise" % v.name,
                         "time ÷ best peer: " + ", ".join(parts), "met" if ok else "**not met**"))
            rows.append(("prover, %s: peak RSS over glibc ≤ cache cap (1 GiB)" % v.name,
                         ", ".join(rss_parts), "met" if rss_ok else "**not met**"))
    c = "small allocs <64 KiB"
    g = by.get((c, "glibc"))
    for v in zks:
        d = by.get((c, v.name))
        if d and g:
            pr = sorted(d.get("vs_glibc_paired") or [])
            r = med(pr) if pr else med(d["samples"]) / med(g["samples"])
            rng = " (per-round ratios %.2f–%.2f, n=%d)" % (pr[0], pr[-1], len(pr)) if pr else ""
            rows.append(("small allocs, %s: ≥ 0.90x glibc throughput" % v.name,
                         "%s vs %s Mops/s; %.2fx%s" % (num(med(d["samples"])), num(med(g["samples"])),
                                                       r, rng),
                         "met" if r >= 0.9 else "**not met**"))
    lend = [d for d in runner.results if d["bench"] == "lend"]
    for d in lend:
        s = sorted(d["samples"])
        rows.append(("%s: median and p99 reported" % d["case"],
                     "median %s us, p99 %s us (n=%d, backing %s)" % (num(med(s)), num(pctl(s, 99)),
                                                                     len(s), d.get("backing")),
                     "reported"))
    if not lend:
        built = any(v.daemon and not v.skip for v in variants)
        rows.append(("LEND round trip: median and p99",
                     "not in this run" if built else "daemon not built", "not measured"))
    return rows


def write_reports(runner, variants, mode, took_s, out):
    """took_s: the run's length (None: not known, as for a report rewritten from an older
    results.json)."""
    os.makedirs(out, exist_ok=True)
    variants = [v for v in variants if not v.real_only]  # bench/real reports those
    m = getattr(runner, "machine", None) or machine_info()
    by, cases = index(runner.results)
    fork_rows = [d for d in runner.results if d["bench"] == "fork"]
    cases = [c for c in cases if c not in {d["case"] for d in fork_rows}]  # own section
    names = [v.name for v in variants]
    L = []
    L.append("# zk-nalloc benchmark results (`make %s`)" % ("bench" if mode == "full" else
                                                            "bench-" + mode))
    L.append("")
    L.append("Measured %s%s, commit %s. Every figure is **median (min–max)** of the "
             "repetitions of one run; **bold** is the ratio to the physical floor measured in the "
             "same process: the same writes into memory that was faulted in once and kept "
             "(1.00x = the floor; for GB/s, floor ÷ measured). These machines are noisy: compare "
             "ratios, not absolute times across runs." % (
                 m["date_utc"], "" if took_s is None else " in %.0f s" % took_s, m["commit"] or "?"))
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    for k in ("cpu", "cores", "memory_gib", "kernel", "virtualized", "thp_enabled",
              "thp_shmem_enabled", "thp_defrag", "hugetlb_pages", "free_page_reporting_order",
              "packages"):
        L.append("| %s | %s |" % (k, m.get(k, "?")))
    if getattr(runner, "load_start", None):
        L.append("| load average (1, 5, 15 min) at start / end | %s / %s |" % (runner.load_start,
                                                                          m["loadavg"]))
    ds = getattr(runner, "daemon_stats_after", None)
    if ds:
        b = ds.get("backing", {})
        L.append("| zknallocd backing | %s (%s), sealed: %s |" % (b.get("kind"), b.get("detail"),
                                                                 b.get("sealed")))
    L.append("")
    L.append("Variants: peers at their defaults and with their own THP switch (glibc+thp: "
             "`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, jemalloc+thp: `MALLOC_CONF=thp:always`, "
             "mimalloc+thp: `MIMALLOC_LARGE_OS_PAGES=1`; tcmalloc has none); zk-nalloc preloaded "
             "with no daemon reachable, and with a zknallocd on a temporary socket started with "
             "`%s`, %s. In the burst and MSM cases the measured +daemon process is the "
             "second of its case: an untimed one runs first and the daemon's background work "
             "(zeroing, preparing what it learned) is awaited, as for a service's daemon; "
             "cold start measures the first process against a fresh daemon." %
             (" ".join(runner.daemon_args),
              "a fresh one for each family" if runner.fresh_daemons
              else "one for the whole run, idle (nothing dirty or being zeroed) before each family"))
    skipped = [v for v in variants if v.skip]
    if skipped:
        L.append("")
        L.append("Not run: " + "; ".join("%s (%s)" % (v.name, v.skip) for v in skipped) + ".")
    L.append("")

    ratio_cases = [c for c in cases if any(ratio_to_floor(by.get((c, n))) is not None for n in names)
                   and not c.startswith("prover")]
    L.append("## Summary: slowdown against the physical floor (1.00x = floor, lower is better)")
    L.append("")
    L.append("| case | floor | " + " | ".join(names) + " |")
    L.append("|---" * (len(names) + 2) + "|")
    for c in ratio_cases:
        fl = [med(by[(c, n)]["floor"]) for n in names if (c, n) in by and by[(c, n)].get("floor")]
        unit = next(by[(c, n)]["unit"] for n in names if (c, n) in by)
        row = ["%s %s" % (num(med(fl)), unit) if fl else "—"]
        for n in names:
            r = ratio_to_floor(by.get((c, n)))
            row.append("%.2fx" % r if r is not None else "—")
        L.append("| %s | %s |" % (c, " | ".join(row)))
    L.append("")

    # Cases without a write floor: absolute figures, and the prover against its arena floor.
    other = [c for c in cases if c not in ratio_cases and c.startswith(("burst-nowrite", "small", "prover"))]
    if other:
        L.append("## Summary: cases without a per-process floor")
        L.append("")
        L.append("burst-nowrite: µs per burst (no writes, so no floor). small: Mops/s (higher is "
                 "better), in brackets ÷ glibc (median of the ratios to glibc's process of the same "
                 "interleaved round). prover: ms per repetition, in brackets ÷ the arena "
                 "floor (same NTTs on buffers allocated once, measured once per size), then peak RSS.")
        L.append("")
        L.append("| case | floor | " + " | ".join(names) + " |")
        L.append("|---" * (len(names) + 2) + "|")
        for c in other:
            fl = [med(d["floor"]) for d in runner.results if d["case"] == c and d.get("floor")]
            g = by.get((c, "glibc"))
            row = ["%s ms" % num(med(fl)) if fl else "—"]
            for n in names:
                d = by.get((c, n))
                if not d:
                    row.append("—")
                    continue
                x = med(d["samples"])
                if c.startswith("small"):
                    pr = d.get("vs_glibc_paired")
                    row.append("%s (%.2fx)" % (num(x), med(pr) if pr else x / med(g["samples"]))
                               if g else num(x))
                elif c.startswith("prover"):
                    row.append("%s (%.2fx) %d MiB" % (num(x), x / med(fl), d.get("maxrss_kb", 0) >> 10)
                               if fl else num(x))
                else:
                    row.append(num(x))
            L.append("| %s | %s |" % (c, " | ".join(row)))
        L.append("")

    L.append("## Targets (issue 5)")
    L.append("")
    L.append("| target | measured | verdict |")
    L.append("|---|---|---|")
    for t in targets(by, cases, variants, runner):
        L.append("| %s | %s | %s |" % t)
    L.append("")
    L.append("Verdicts: a ratio target is *met* when the median ratio is within it; *not met, "
             "within noise* when the median misses it but the median's 95% confidence interval "
             "(order statistics of the per-repetition ratios) still reaches it; **not met** when "
             "even that interval lies beyond it. The prover is *slower beyond noise* only when "
             "every zk-nalloc repetition is slower than every repetition of the best peer and the "
             "gap exceeds half the spread of all allocators' medians in that case (all allocators "
             "should be equal there). Best peer: the peer variant with the lowest median.")
    if any(c.startswith("msm") for c in cases):
        L.append("")
        L.append("MSM buckets: each round callocs 96 MiB that the last round dirtied, so someone must "
                 "write 96 MiB of zeroes per round. The peers do it on the caller's time. zk-nalloc's "
                 "background thread (client/zeroer.c) zeroes cached blocks for calloc on another "
                 "core: in `msm` it has the floor's work between rounds (as a prover's other work "
                 "would leave it), so a round's callocs mostly find clean blocks; in `msm-loop` the "
                 "rounds run back to back and the caller and the thread split the zeroing. "
                 "`zeroing_us` is what one core needs for the round's memset, measured in the same "
                 "process after each round (with zk-nalloc, while its thread may still be zeroing, "
                 "so it reads high). These VMs' memory bandwidth changes by 2-3x from minute to "
                 "minute: compare columns of one run only.")
    if any("processes" in c for c in cases):
        L.append("")
        L.append("Processes at once (`make bench-scale`): the processes of one variant start "
                 "together, each waiting at a pipe until all are loaded (bench_wait_gate), and "
                 "share one daemon. Cold start: each process's time is one sample, and the "
                 "process wall column is the whole group's, to its last process. Contention in N "
                 "processes: repetition i's GB/s is the sum of every process's repetition i (equal "
                 "work from one start, so they overlap in all but the slowest one's tail).")
    L.append("")

    real_res = getattr(runner, "real_res", None)
    if real_res and not real_res.get("skip"):
        import report as real_report  # bench/real/report.py (on sys.path once real ran)
        L.extend(real_report.summary(real_res, "real/results.md"))
        L.append("")

    L.append("## All figures")
    L.append("")
    L.append("Per case: median (min–max) in the unit shown, **ratio to floor** (the median of the per-repetition ratios: each repetition is followed by its floor in the same process). The zk-nalloc column is the library's own count (`ZK_NALLOC_SHOW_STATS=1`) for one process: large requests served from its cache, missed, lent by the daemon, mapped locally without a daemon, and (+daemon) the share of misses the daemon served; a +daemon run the daemon never served is reported as a failure. Huge: share of the "
             "live buffers mapped with 2 MiB pages while the last repetition held them "
             "(anonymous THP, or PMD-mapped shared memory).")
    for c in cases:
        rows = [by.get((c, n)) for n in names]
        if not any(rows):
            continue
        d0 = next(d for d in rows if d)
        L.append("")
        L.append("### %s (%s)" % (c, d0["unit"] + (", higher is better" if d0.get("higher_is_better")
                                                    else ", lower is better")))
        L.append("")
        extra_cols = []
        if d0["bench"] == "prover":  # (elsewhere the harness's own floor buffers are in it)
            extra_cols.append("peak RSS")
        if any(d and "live_rss_kb" in d for d in rows):
            extra_cols.append("huge")
        if d0["bench"] == "coldstart":
            extra_cols.append("process wall (ms)")
        if any(d and d.get("zk_stats") for d in rows):
            extra_cols.append("zk-nalloc: hits / misses / daemon lends / local maps / misses served by the daemon")
        if d0["bench"] == "small":
            extra_cols.append("vs glibc")
        L.append("| allocator | measured | floor | " + " | ".join(extra_cols) + (" |" if extra_cols
                                                                               else ""))
        L.append("|---" * (3 + len(extra_cols)) + "|")
        g = by.get((c, "glibc"))
        for v in variants:
            d = by.get((c, v.name))
            if not d:
                # A variant a case leaves out (cold start after idle runs four) is not a failure.
                failed = any(e.startswith(v.name + ":") for e in runner.errors)
                L.append("| %s | %s | | %s" % (v.name, v.skip or ("failed (see log)" if failed
                                                                   else "not run in this case"),
                                               "| " * len(extra_cols)))
                continue
            fl = ("%s (%s–%s)" % (num(med(d["floor"])), num(min(d["floor"])), num(max(d["floor"])))
                  if d.get("floor") else "—")
            row = [v.name, cell(d), fl]
            for col in extra_cols:
                if col == "peak RSS":
                    row.append("%d MiB" % (d.get("maxrss_kb", 0) >> 10))
                elif col == "huge":
                    live = d.get("live_rss_kb", 0)
                    huge = d.get("live_anon_huge_kb", 0) + d.get("live_shmem_pmd_kb", 0) + \
                        d.get("live_file_pmd_kb", 0)
                    row.append("%d%%" % (100 * huge / live) if live > 0 else "—")
                elif col == "process wall (ms)":
                    w = [x * 1000 for x in d.get("wall_samples", [])]
                    row.append("%s (%s–%s)" % (num(med(w)), num(min(w)), num(max(w))) if w else "—")
                elif col.startswith("zk-nalloc:"):
                    z = d.get("zk_stats")
                    misses = z.get("misses", 0) if z else 0
                    served = "%d%%" % (100 * (misses - z.get("fallbacks", 0)) / misses) \
                        if z and misses and d["variant"].endswith("+daemon") else "—"
                    row.append("%d / %d / %d / %d / %s" % (z.get("hits", 0), misses,
                                                           z.get("daemon_lends", 0),
                                                           z.get("fallbacks", 0), served)
                               if z else "")
                elif col == "vs glibc":
                    pr = d.get("vs_glibc_paired")
                    row.append("%.2fx" % (med(pr) if pr else med(d["samples"]) / med(g["samples"]))
                               if g else "—")
            L.append("| " + " | ".join(row) + " |")
    if fork_rows:
        L.append("")
        L.extend(fork_section(by, fork_rows, variants))
    lend = [d for d in runner.results if d["bench"] == "lend"]
    if lend:
        L.append("")
        L.append("### LEND round trip (raw protocol, one region per LEND, µs)")
        L.append("")
        L.append("| step | median | p99 | min–max | n |")
        L.append("|---|---|---|---|---|")
        for d in lend:
            s = sorted(d["samples"])
            L.append("| %s | %s | %s | %s–%s | %d |" % (d["case"], num(med(s)), num(pctl(s, 99)),
                                                       num(s[0]), num(s[-1]), len(s)))
        L.append("")
        L.append("LEND+map: send LEND, receive REGIONS with the fd, map it MAP_SHARED at a 2 MiB "
                 "aligned address, close the fd. populate: MADV_POPULATE_WRITE over the whole "
                 "region right after (what touching it all costs in page tables). RETURN: unmap, "
                 "send RETURN, receive RETURN_OK.")
    if runner.errors:
        L.append("")
        L.append("## Failures")
        L.append("")
        for e in runner.errors:
            L.append("- `%s`" % e.replace("`", "'").replace("\n", " ")[:500])
    L.append("")
    L.append("![chart](results.png)")
    L.append("")
    md = "\n".join(L)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "machine.txt"), "w") as f:
        for k, val in m.items():
            f.write("%s: %s\n" % (k, val))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"machine": m, "mode": mode, "took_s": took_s,
                   "load_start": getattr(runner, "load_start", None),
                   "fresh_daemons": runner.fresh_daemons,
                   "daemon_args": runner.daemon_args,
                   "results": runner.results, "errors": runner.errors,
                   "daemon_stats": getattr(runner, "daemon_stats_after", None)}, f, indent=1)
    chart(variants, out, by, cases, ratio_cases, runner.results, m)
    return md


def fork_section(by, rows, variants):
    """results.md lines for the fork family (issue 10)."""
    L = ["## fork (issue 10)", "",
         "`fork LIVE_MIB`: the process holds LIVE_MIB of live blocks (%d MiB each, written once, "
         "so resident) and forks; every fork gets a fresh set of blocks (the first fork of that "
         "memory). fork+exec: the child execs `/bin/true` (with the same LD_PRELOAD); "
         "fork+_exit: the child exits at once. Each as median (min–max) ms: until fork() "
         "returned in the parent, and until the child was reaped; ÷ glibc: the reaped medians. "
         "Rewrite: the parent memsets every live byte once after the fork, while the child "
         "waits on a pipe (copy-on-write applies to every allocator) or after it was reaped; "
         "in brackets ÷ the same memset just before the fork. From daemon: share of the live "
         "bytes libzknalloc held from zknallocd at the fork (median over the sets, min–max), "
         "the daemon started fresh for each live size and fork kind with all the blocks that "
         "process uses prewarmed (e.g. `%s` for 5 sets of 512 MiB)." % (
             FORK_BLOCK_MIB, " ".join(fork_daemon_args(5 * 512))), ""]

    def ms(xs):
        return "%s (%s–%s)" % (num(med(xs)), num(min(xs)), num(max(xs))) if xs else "—"

    def rewrite(d):
        if not d:
            return "—"
        r = ratio_to_floor(d)
        return ms(d["samples"]) + (" (%.1fx)" % r if r else "")

    sizes = sorted({d["live_mib"] for d in rows})
    for live in sizes:
        c = lambda kind: "%s, %d MiB live" % (kind, live)
        L.append("### %d MiB live" % live)
        L.append("")
        L.append("| allocator | fork+exec: fork() | fork+exec: reaped | ÷ glibc | fork+_exit: "
                 "fork() | fork+_exit: reaped | ÷ glibc | rewrite, child alive | rewrite, child "
                 "exited | from daemon |")
        L.append("|---" * 10 + "|")
        ge, gx = by.get((c("fork+exec"), "glibc")), by.get((c("fork+_exit"), "glibc"))
        for v in variants:
            e, x = by.get((c("fork+exec"), v.name)), by.get((c("fork+_exit"), v.name))
            if not e and not x:
                L.append("| %s | %s |%s" % (v.name, v.skip or "failed (see log)", " |" * 8))
                continue
            share = "—"
            db = [b for d in (e, x, by.get((c("rewrite after fork, child alive"), v.name)))
                  if d for b in d.get("daemon_bytes", [])]
            if db and live:
                pc = sorted(100.0 * b / (live << 20) for b in db)
                share = "%.0f%% (%.0f–%.0f%%)" % (med(pc), pc[0], pc[-1])
            ratio = lambda d, g: "%.2fx" % (med(d["samples"]) / med(g["samples"])) if d and g else "—"
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                v.name, ms(e.get("fork_ms") if e else None), ms(e["samples"] if e else None),
                ratio(e, ge), ms(x.get("fork_ms") if x else None), ms(x["samples"] if x else None),
                ratio(x, gx), rewrite(by.get((c("rewrite after fork, child alive"), v.name))),
                rewrite(by.get((c("rewrite after fork, child exited"), v.name))), share))
        L.append("")
    # issue 10's target
    c = "fork+exec, 512 MiB live"
    g, z = by.get((c, "glibc")), by.get((c, "zk-nalloc+daemon"))
    L.append("Target (issue 10): fork()+exec with 512 MiB live from the daemon takes at most 2x "
             "glibc's time plus 5 ms (reaped medians): ")
    if g and z:
        lim = 2 * med(g["samples"]) + 5
        db = z.get("daemon_bytes", [])
        full = db and min(db) >= 512 << 20
        L[-1] += "zk-nalloc+daemon %s ms, glibc %s ms, limit %s ms: **%s**%s." % (
            num(med(z["samples"])), num(med(g["samples"])), num(lim),
            "met" if med(z["samples"]) <= lim else "not met",
            "" if full else " (but not every set was all from the daemon: see the last column)")
    else:
        L[-1] += "not measured (needs glibc and zk-nalloc+daemon at 512 MiB)."
    return L


def chart(variants, out, by, cases, ratio_cases, results, m):
    """m: machine_info() of the machine that measured (write_reports')."""
    gp = shutil.which("gnuplot")
    if not gp:
        print("gnuplot not found: no chart (apt-get install gnuplot-nox)", file=sys.stderr)
        return
    names = [v.name for v in variants if not v.skip]
    if not names:
        return
    short = {"fft 8 MiB": "FFT 8M", "fft 32 MiB": "FFT 32M", "fft 128 MiB": "FFT 128M",
             "burst 8x16 MiB": "burst", "burst 64x512 KiB": "burst 512K", "msm 16x6 MiB calloc": "MSM",
             "msm 16x6 MiB calloc back to back": "MSM loop",
             "cold start 1 GiB": "cold start"}

    def label(c):
        if c in short:
            return short[c]
        return (c.replace("contention ", "contend ").replace(" threads", "T").replace(" thread", "T")
                .replace(" processes at once", "P").replace(" processes", "P")
                .replace("cold start 1 GiB, ", "cold ").replace(", after ", " after ")
                .replace("cold start after ", "cold after ").replace("prover NTT ", "NTT "))
    top = os.path.join(out, "chart_top.dat")
    with open(top, "w") as f:
        for c in ratio_cases:
            vals = []
            for n in names:
                r = ratio_to_floor(by.get((c, n)))
                vals.append("%.4f" % r if r else "?")
            f.write('"%s" %s\n' % (label(c), " ".join(vals)))
    bottom = os.path.join(out, "chart_bottom.dat")
    with open(bottom, "w") as f:
        for c in cases:
            if c.startswith("prover"):
                fl = [med(d["floor"]) for d in results if d["case"] == c and d.get("floor")]
                vals = []
                for n in names:
                    d = by.get((c, n))
                    vals.append("%.4f" % (med(d["samples"]) / med(fl)) if d and fl else "?")
                f.write('"%s" %s\n' % (label(c), " ".join(vals)))
        c = "small allocs <64 KiB"
        g = by.get((c, "glibc"))
        if g:
            vals = []
            for n in names:
                d = by.get((c, n))
                pr = d.get("vs_glibc_paired") if d else None
                vals.append(("%.4f" % (1 / med(pr) if pr else med(g["samples"]) / med(d["samples"])))
                            if d else "?")
            f.write('"small <64K (vs glibc)" %s\n' % " ".join(vals))
    palette = {"glibc": "#444444", "glibc+thp": "#999999", "jemalloc": "#1f5fa8",
               "jemalloc+thp": "#7fb0e6", "mimalloc": "#2e8b57", "mimalloc+thp": "#98d8a8",
               "tcmalloc": "#8a5fb5", "zk-nalloc": "#e07b00", "zk-nalloc+daemon": "#d62728"}
    plots = lambda dat: ", ".join(
        "'%s' using %d:xtic(1) title '%s' lc rgb '%s'" % (dat, i + 2, n, palette.get(n, "#000000"))
        for i, n in enumerate(names))
    ntop = len(ratio_cases)
    nbottom = sum(1 for _ in open(bottom))
    script = """
set terminal pngcairo size 1500,1000 font 'sans,11' noenhanced
set output '%(png)s'
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1.5
set style fill solid 0.9 border -1
set boxwidth 0.9
set key outside right top vertical
set grid ytics
set logscale y 2
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb 'black' front
set multiplot layout %(rows)d,1 title "zk-nalloc vs peers, time divided by a reference (1 = reference, log scale, lower is better)\\n%(machine)s"
set title 'allocation patterns: time / physical floor (contention: floor GB/s / measured GB/s)'
set ylabel 'x floor'
set yrange [0.5:*]
set xrange [-0.6:%(xt)f]
plot %(top)s
%(bottom_plot)s
unset multiplot
""" % {"png": os.path.join(out, "results.png"), "top": plots(top),
       "rows": 2 if nbottom else 1,
       # A run without the prover and small families (scale) has no bottom chart.
       "bottom_plot": """set title 'prover-shaped NTT: time / arena floor;  small allocations < 64 KiB: glibc throughput / throughput'
set ylabel 'ratio'
unset key
set yrange [*:*]
set xrange [-0.6:%f]
plot %s""" % (nbottom - 0.4, plots(bottom)) if nbottom else "",
       "xt": ntop - 0.4,
       "machine": "%s, %s cores, kernel %s, THP anon %s, shmem %s" % (
           m["cpu"], m["cores"], m["kernel"], _sel(m["thp_enabled"]), _sel(m["thp_shmem_enabled"]))}
    gpf = os.path.join(out, "chart.gp")
    with open(gpf, "w") as f:
        f.write(script)
    r = subprocess.run([gp, gpf], capture_output=True, text=True)
    if r.returncode != 0:
        print("gnuplot failed: %s" % r.stderr[-500:], file=sys.stderr)


def _sel(text):
    """The bracketed choice of a /sys THP setting."""
    if "[" in text:
        return text[text.index("[") + 1:text.index("]")]
    return text or "n/a"


def update_readme(md_path, readme):
    """Puts the summary and targets of the latest full run into bench/README.md."""
    if not os.path.exists(readme):
        return
    text = read(readme)
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    if begin not in text or end not in text:
        return
    md = read(md_path)
    keep = []
    on = False
    for line in md.splitlines():
        if line.startswith("## Machine") or line.startswith("## Summary") or \
                line.startswith("## Targets"):
            on = True
        elif line.startswith("## "):
            on = False
        if on:
            keep.append(line.replace("## ", "### ", 1) if line.startswith("## ") else line)
    block = "%s\n_Generated by `make bench`; full tables in [results/results.md](results/results.md)._\n\n%s\n\n![chart](results/results.png)\n%s" % (
        begin, "\n".join(keep).strip(), end)
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    with open(readme, "w") as f:
        f.write(text + "\n")


# --------------------------------------------------------------------- demo

def demo(build):
    zk = os.path.join(build, "libzknalloc.so")
    zkd = os.path.join(build, "zknallocd")
    if not (os.path.exists(zk) and os.access(zkd, os.X_OK)):
        print("demo: zk-nalloc is not built (%s, %s); run `make` first." % (zk, zkd))
        return 1
    tmp = tempfile.mkdtemp(prefix="zkn-demo-")
    runner = Runner(build, tmp)
    glibc = Variant("glibc", "glibc", None)
    zkv = Variant("zk-nalloc+daemon", "zknalloc", zk, daemon=True, peer=False)
    say = lambda s="": print(s, flush=True)
    say("zk-nalloc demo")
    say("==============")
    say("A prover frees and re-allocates huge buffers every round, and every new prover process")
    say("starts cold: each page is faulted and zeroed by the kernel again. zknallocd keeps a warm")
    say("pool of huge-page-backed regions and lends them to any process; libzknalloc, preloaded,")
    say("serves malloc from them.")
    say()
    say("1. Starting a daemon on a temporary socket, with 8 warm 128 MiB regions (1 GiB):")
    try:
        with Daemon(build, DAEMON_ARGS, tmp) as d:
            runner.daemon = d
            say("   %s --socket %s %s" % (zkd, d.sock, " ".join(DAEMON_ARGS)))
            st = d.stats() or {}
            b = st.get("backing", {})
            say("   backing: %s (%s)" % (b.get("kind", "?"), b.get("detail", "")))
            say()
            say("2. Cold start: a fresh process allocates and fills 1 GiB in 128 MiB buffers, 3 times each.")
            say("   (zk-nalloc runs as: LD_PRELOAD=%s ZK_NALLOC_SOCKET=%s %s/bench/coldstart)"
                % (zk, d.sock, build))
            res = {}
            for v in (glibc, zkv):
                rows = []
                for _ in range(3):
                    rows += runner.run(v, "coldstart", [1024, 128], record=False)
                if rows:
                    xs = [x for r in rows for x in r["samples"]]
                    fl = [x for r in rows for x in r["floor"]]
                    res[v.name] = med(xs)
                    say("   %-17s %8s ms   (min %s, max %s; the same writes into resident memory: %s ms)"
                        % (v.name, num(med(xs)), num(min(xs)), num(max(xs)), num(med(fl))))
            if len(res) == 2:
                say("   => speed-up %.1fx" % (res["glibc"] / res["zk-nalloc+daemon"]))
            say()
            say("3. FFT loop: allocate 128 MiB, fill it, free it, 9 times in one process.")
            res = {}
            for v in (glibc, zkv):
                r = runner.run(v, "zk_patterns", ["fft", 128, 9, 1], record=False)
                if r:
                    xs, fl = r[0]["samples"], r[0]["floor"]
                    res[v.name] = med(xs)
                    say("   %-17s %8s ms per iteration   (floor %s ms)" % (v.name, num(med(xs) / 1000),
                                                                          num(med(fl) / 1000)))
            if len(res) == 2:
                say("   => speed-up %.1fx" % (res["glibc"] / res["zk-nalloc+daemon"]))
            say()
            say("4. The daemon's view (zknallocctl stats):")
            ctl = os.path.join(build, "zknallocctl")
            shown = False
            if os.access(ctl, os.X_OK):
                r = subprocess.run([ctl, "--socket", d.sock, "stats"], capture_output=True, text=True)
                if r.returncode == 0 and r.stdout.strip():
                    say("\n".join("   " + l for l in r.stdout.rstrip().splitlines()))
                    shown = True
            if not shown:
                st = d.stats()
                say("   " + (json.dumps({k: st.get(k) for k in ("backing", "pool", "totals")}, indent=1)
                             .replace("\n", "\n   ") if st else "(no stats)"))
            say()
            say("5. Stopping the daemon (SIGTERM); its socket and temporary directory go with it.")
            runner.daemon = None
    except RuntimeError as e:
        say("demo: %s" % e)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say("Done. `make bench` measures every pattern against glibc, jemalloc, mimalloc and tcmalloc.")
    if runner.errors:
        return 1
    return 0


# --------------------------------------------------------------------- main

def _sigterm(signum, frame):
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the daemon


def main():
    signal.signal(signal.SIGTERM, _sigterm)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["full", "quick", "scale", "demo", "report"])
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", default=None)
    ap.add_argument("--peers-only", action="store_true")
    ap.add_argument("--daemon-args", default=None, metavar="'OPTION ...'",
                    help="zknallocd's options for the +daemon variants, in place of the mode's "
                         "(full, quick: %s; scale: sized for nproc processes)" % " ".join(DAEMON_ARGS))
    ap.add_argument("--lib-dir", default=None,
                    help="look for the peer allocators' libraries here first (a machine where "
                         "they are copied, not installed)")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--real-proofs", default=None, metavar="PROTO:N,...",
                    help="real family: proofs per allocator, e.g. groth16:5,plonk:3 (default: the plan's)")
    ap.add_argument("--progs", default=None,
                    help="comma-separated families: " + " ".join(FAMILIES))
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    if a.progs:
        bad = [p for p in a.progs.split(",") if p not in FAMILIES]
        if bad:
            ap.error("unknown families %s (known: %s)" % (",".join(bad), " ".join(FAMILIES)))
    if a.lib_dir:
        LIB_DIRS.insert(0, os.path.abspath(a.lib_dir))
    for prog in ("zk_patterns", "contention", "coldstart", "prover", "small", "lend_rtt", "fork",
                 "fault_cost"):
        if not os.access(os.path.join(build, "bench", prog), os.X_OK):
            print("bench: %s/bench/%s missing; run `make bench-build`" % (build, prog), file=sys.stderr)
            return 2
    if a.mode == "demo":
        return demo(build)
    if a.mode == "report":  # rewrite the tables and chart from results.json
        out = os.path.abspath(a.out or os.path.join(ROOT, "bench", "results"))
        with open(os.path.join(out, "results.json")) as f:
            saved = json.load(f)
        variants = make_variants(build, a.peers_only)
        runner = Runner(build, out)
        runner.results, runner.errors = saved["results"], saved["errors"]
        runner.daemon_stats_after = saved.get("daemon_stats")
        runner.load_start = saved.get("load_start")
        runner.machine = saved.get("machine")
        runner.fresh_daemons = saved.get("fresh_daemons", saved["mode"] == "full")
        runner.daemon_args = saved.get("daemon_args", DAEMON_ARGS)
        seen = {d["variant"] for d in runner.results}
        for v in variants:
            if v.name not in seen and not v.skip:
                v.skip = "no results"
        write_reports(runner, variants, saved["mode"], saved.get("took_s"), out)
        if saved["mode"] == "full" and out == os.path.join(ROOT, "bench", "results"):
            update_readme(os.path.join(out, "results.md"), os.path.join(ROOT, "bench", "README.md"))
        return 0
    plan = dict(PLANS[a.mode])
    if a.progs:
        plan["progs"] = a.progs.split(",")
        if a.mode == "scale" and set(plan["progs"]) - set(PLANS["scale"]["progs"]):
            ap.error("scale runs the families %s only" % ",".join(PLANS["scale"]["progs"]))
    if a.real_proofs:
        try:
            plan["real_proofs"] = [(p.split(":")[0], int(p.split(":")[1])) for p in a.real_proofs.split(",")]
        except (IndexError, ValueError):
            ap.error("--real-proofs: PROTO:N,... (e.g. groth16:5,plonk:3)")
        if any(p not in ("groth16", "plonk") for p, _ in plan["real_proofs"]):
            ap.error("--real-proofs: protocols are groth16 and plonk")
    out = a.out or os.path.join(ROOT, "bench", "results", "" if a.mode == "full" else a.mode)
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    variants = make_variants(build, a.peers_only)
    if plan["variants"]:
        variants = [v for v in variants if v.name in plan["variants"]]
    if a.only:
        keep = a.only.split(",")
        unknown = [k for k in keep if k not in {v.name for v in make_variants(build, False)}]
        if unknown:
            ap.error("unknown variants %s" % ",".join(unknown))
        variants = [v for v in variants if v.name in keep]
    started = time.time()
    runner = Runner(build, out)
    if a.mode == "scale":
        runner.daemon_args = scale_daemon_args(os.cpu_count() or 1)
    if a.daemon_args is not None:
        runner.daemon_args = a.daemon_args.split()
    m = machine_info()
    print("zk-nalloc benchmarks (%s): %s, %s cores, kernel %s, THP anon [%s] shmem [%s]" % (
        a.mode, m["cpu"], m["cores"], m["kernel"], _sel(m["thp_enabled"]),
        _sel(m["thp_shmem_enabled"])))
    for v in variants:
        print("  %-18s %s" % (v.name, v.skip or ("LD_PRELOAD=%s" % " ".join(filter(None, (v.lib, v.behind)))
                                                 if v.lib else "system malloc")
                              + (" " + " ".join("%s=%s" % kv for kv in v.env.items()) if v.env else "")
                              + (" + zknallocd %s" % " ".join(runner.daemon_args) if v.daemon else "")))
    runner.load_start = m["loadavg"]
    runner.fresh_daemons = a.mode in ("full", "scale")
    try:
        bench_all(runner, variants, plan)
    except KeyboardInterrupt:
        print("interrupted; writing what was measured", file=sys.stderr)
    finally:
        runner.stop_daemon()
    if plan.get("progs") == ["real"]:  # bench/real wrote its own; keep the other tables
        print("\nresults: %s/real/results.md (%.0f s)" % (out, time.time() - started))
        return 1 if runner.errors else 0
    write_reports(runner, variants, a.mode, time.time() - started, out)
    if a.mode == "full" and not a.out:
        update_readme(os.path.join(out, "results.md"), os.path.join(ROOT, "bench", "README.md"))
    print("\nresults: %s/results.md, results.png, results.json (%.0f s)" % (out, time.time() - started))
    if runner.errors:
        print("%d run(s) failed; see the Failures section" % len(runner.errors), file=sys.stderr)
    if any("DID NOT VERIFY" in e for e in runner.errors):
        print("bench/real: A PROOF DID NOT VERIFY: the benchmark failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
