"""bench/real: real provers measured as a user would (issue 12). Python 3 stdlib only.

snarkjs groth16 and plonk proofs of a circom circuit (bench/real/setup.py makes it,
cached in build/real/), one fresh `node` process per proof as a proving service
runs it, every allocator preloaded in turn, round robin per round so that the
machine's drift hits every allocator alike. Each proof is verified (untimed, no
preload); a proof that does not verify fails the benchmark. Per proof: wall,
user, sys, minor faults and peak RSS from os.wait4's rusage of the node process,
and libzknalloc's own stats (ZK_NALLOC_SHOW_STATS=1) for the zk-nalloc variants.

Then, for groth16 only, a long-lived prover: per allocator one node process that
proves N times (bench/real/service.cjs, N = the plan's groth16 proof count), each
proof verified afterwards; its rusage, the per-proof walls it prints and the
allocator's stats at exit give the steady state a proving service reaches (issue
12's steady-state hit rate; see report.steady_state). plonk is left out (time).

Called by bench/run.py (`--progs real`, in `full` and `quick`); results go to
OUT/real/ (results.md, results.json). `python3 bench/real/real.py report DIR`
rewrites DIR/results.md from DIR/results.json.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import setup as real_setup  # noqa: E402  (bench/real/setup.py)
import report as real_report  # noqa: E402  (bench/real/report.py)

# Protocols left out of the service pass (one process, N proofs per allocator).
SERVICE_SKIP = {"plonk": "not run: a plonk proof takes 70-100 s at 2^16 on the 2-core VM, so N "
                         "more per allocator would about double the family's time"}

PLANS = {
    # circuit, [(protocol, proofs per allocator)]
    # fault_cost: bench/fault_cost's MiB, rounds, pause ms (see fault_cost below);
    # service_rounds: long-lived processes per allocator, round robin (see service_pass);
    # service_proofs: proofs in each of them (at most the fresh-process count).
    # groth16 has 9 fresh-process proofs: its targets sit within a few percent of
    # the best peer, where 5 rounds on this 2-core VM left the median to chance.
    "full": {"circuit": "2^16", "proofs": [("groth16", 9), ("plonk", 3)],
             "fault_cost": (256, 3, 3000), "service_rounds": 2, "service_proofs": 5},
    "quick": {"circuit": "2^14", "proofs": [("groth16", 3)],  # about a minute
              "fault_cost": (128, 1, 3000), "service_rounds": 1, "service_proofs": 3},
}


def say(msg):
    print(msg, flush=True)


def timed(argv, env, cwd, timeout):
    """Runs argv; returns (exit status, seconds, rusage, stderr text) from os.wait4."""
    err = tempfile.TemporaryFile()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=err)
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        killer.cancel()
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    err.seek(0)
    text = err.read().decode("utf-8", "replace")
    err.close()
    if wall >= timeout:
        text += "\n(killed after %d s)" % timeout
    return p.returncode, wall, ru, text


def zk_reports(stderr):
    """libzknalloc's stats reports in stderr, in order: (header line, {counter: value}).
    "zknalloc: stats" is the one at exit (ZK_NALLOC_SHOW_STATS=1), "zknalloc: stats
    (signal)" one on ZK_NALLOC_STATS_SIGNAL."""
    reports = []
    for line in stderr.splitlines():
        parts = line.split()
        if line.startswith("zknalloc: stats"):
            reports.append((line.strip(), {}))
        elif reports and len(parts) == 3 and parts[0] == "zknalloc:" and parts[2].isdigit():
            reports[-1][1][parts[1]] = int(parts[2])
    return reports


def zk_stats(stderr):
    """The exit report's counters ({} when there is none)."""
    at_exit = [z for head, z in zk_reports(stderr) if head == "zknalloc: stats"]
    return at_exit[-1] if at_exit else {}


def preload_check(runner, v, node):
    """None when the variant's allocator is mapped into node (and no other), else why not."""
    code = "process.stdout.write(require('fs').readFileSync('/proc/self/maps','utf8'))"
    p = subprocess.run([node, "-e", code], env=runner_env(runner, v), capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        return "node -e failed under the preload: %s" % p.stderr[-300:]
    libs = ("libjemalloc", "libmimalloc", "libtcmalloc", "libzknalloc")
    mapped = {lib for lib in libs if lib in p.stdout}
    want = {"lib" + v.expect} & set(libs)
    if v.behind:
        want |= {lib for lib in libs if os.path.basename(v.behind).startswith(lib)}
    if mapped != want:
        return "allocators mapped into node: %s, expected %s" % (sorted(mapped) or "none",
                                                                 sorted(want) or "none")
    return None


def runner_env(runner, v):
    e = runner.env_for(v)
    e.pop("ZKB_EXPECT", None)  # the bench programs' own check; node has none
    return runner.R.clean_env(e)


def prove_once(runner, v, t, base, circuit, proto, tmp, timeout):
    """One timed proof and its verification; returns a sample dict. Raises RuntimeError."""
    out = tempfile.mkdtemp(prefix="p-", dir=tmp)
    prove, verify = real_setup.prove_argv(t, base, circuit, proto, out)
    rc, wall, ru, err = timed(prove, runner_env(runner, v), out, timeout)
    if rc != 0:
        raise RuntimeError("prove exited %d: %s" % (rc, real_setup.strip_ansi(err)[-500:]))
    verify_proof(verify, out, timeout)
    public = json.load(open(os.path.join(out, "public.json")))
    shutil.rmtree(out, ignore_errors=True)
    s = {"wall_s": wall}
    s.update(usage(ru))
    s["public"] = public
    add_zk_stats(s, v, err)
    return s


def verify_proof(verify, cwd, timeout):
    """Verifies one proof, untimed, with no allocator preloaded. Raises RuntimeError."""
    vp = subprocess.run(verify, cwd=cwd, env=real_setup.node_env(), capture_output=True, text=True,
                        timeout=timeout)
    vout = real_setup.strip_ansi(vp.stdout + vp.stderr)
    if vp.returncode != 0 or "OK!" not in vout or "[ERROR]" in vout:
        raise RuntimeError("PROOF DID NOT VERIFY (exit %d): %s" % (vp.returncode, vout[-500:]))


def usage(ru):
    return {"user_s": ru.ru_utime, "sys_s": ru.ru_stime, "minflt": ru.ru_minflt,
            "majflt": ru.ru_majflt, "maxrss_kb": ru.ru_maxrss, "nvcsw": ru.ru_nvcsw,
            "nivcsw": ru.ru_nivcsw}


def add_zk_stats(s, v, err):
    z = zk_stats(err)
    if v.expect == "zknalloc":
        if not z:
            raise RuntimeError("libzknalloc printed no stats at exit (ZK_NALLOC_SHOW_STATS=1)")
        s["zk_stats"] = z


def fault_cost(runner, plan):
    """Where the machine charges fresh memory's first touch (bench/fault_cost: 4 KiB pages
    against transparent huge pages, fresh child processes): the context the sys column
    needs, since libzknalloc faults huge pages and most peers 4 KiB ones.
    {"4k"|"thp": {"mib", "wall_ms", "user_ms", "sys_ms"} (medians)}, or {"error": why}."""
    prog = os.path.join(runner.build, "bench", "fault_cost")
    mib, rounds, pause_ms = plan["fault_cost"]
    try:
        p = subprocess.run([prog, str(mib), str(rounds), str(pause_ms)], capture_output=True,
                           text=True, timeout=60 + rounds * 2 * (pause_ms / 1000 + 20))
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": "%s: %s" % (prog, e)}
    if p.returncode != 0:
        return {"error": "%s exited %d: %s" % (prog, p.returncode, p.stderr.strip()[:300])}
    out = {}
    for line in p.stdout.splitlines():
        r = json.loads(line)
        out[r["case"]] = {"mib": r["mib"], "wall_ms": statistics.median(r["samples"]),
                          "user_ms": statistics.median(r["user_ms"]),
                          "sys_ms": statistics.median(r["sys_ms"]), "rounds": len(r["samples"])}
    return out


def run_family(runner, variants, mode, R, proofs=None):
    """The `real` family, inside bench/run.py's bench_all. R: the run.py module;
    proofs: [(protocol, proofs per allocator)] instead of the plan's."""
    plan = dict(PLANS["full" if mode == "full" else "quick"])
    if proofs:
        plan["proofs"] = proofs
    circuit = plan["circuit"]
    runner.R = R
    out_dir = os.path.join(runner.out, "real")
    res = {"mode": mode, "circuit": circuit, "variants": [], "skipped": {}, "errors": [],
           "samples": {}, "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "daemon_args": list(R.DAEMON_ARGS), "test_only": real_setup.TEST_ONLY}
    R.section("real provers: snarkjs %s, circuit %s (bench/real); a fresh node process per "
              "proof, round robin across allocators" % (
                  " and ".join("%s x%d" % p for p in plan["proofs"]), circuit))
    base = os.path.join(runner.build, "real")
    t0 = time.monotonic()
    try:
        info = real_setup.setup(base, [circuit])[circuit]
        t = real_setup.tools(base)
    except (real_setup.SetupError, OSError, subprocess.SubprocessError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        say("  skipped: bench/real setup failed: %s" % why)
        res["skip"] = "setup failed: %s" % why
        real_report.write(out_dir, res)
        return res
    res["setup_s"] = time.monotonic() - t0
    res["circuit_info"] = info
    res["versions"] = versions(base, t)
    for v in variants:
        if v.thp:
            continue  # the +thp peers are left out of this family (time)
        if v.skip:
            res["skipped"][v.name] = v.skip
            say("  %-18s %s" % (v.name, v.skip))
            continue
        res["variants"].append(v)
    live = list(res["variants"])
    for v in list(live):
        why = preload_check(runner, v, t["node"])  # (+daemon: no daemon needed to check)
        if why:
            live.remove(v)
            res["skipped"][v.name] = why
            runner.fail(v, "real", ["preload"], why)
    res["service"] = {"proofs": {}, "samples": {}, "order": {}, "skipped": dict(SERVICE_SKIP)}
    say("  fresh-page cost, 4 KiB against huge pages (bench/fault_cost)")
    res["fault_cost"] = fault_cost(runner, plan)
    tmp = tempfile.mkdtemp(prefix="zkn-real-")
    try:
        for proto, n in plan["proofs"]:
            prove_rounds(runner, R, live, t, base, circuit, proto, n, tmp, res)
            if proto in SERVICE_SKIP:
                continue
            sn = min(n, plan["service_proofs"])
            if sn < 2:
                res["service"]["skipped"][proto] = "%d proof per allocator: no proofs 2..N" % sn
                continue
            service_pass(runner, R, live, t, base, circuit, proto, sn, plan["service_rounds"],
                         tmp, res)
    except KeyboardInterrupt:
        res["errors"].append("interrupted")
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if runner.shared:
            res["daemon_stats"] = runner.shared.stats()
        res["variants"] = [v.name for v in res["variants"]]
        res["peers"] = [v.name for v in live if v.peer]
        real_report.write(out_dir, res)
        say("  real: %s/results.md" % out_dir)
    return res


def prove_rounds(runner, R, live, t, base, circuit, proto, n, tmp, res):
    timeout = 1800 if proto == "plonk" else 900
    say("  %s %s: one untimed proof under glibc first (zkey and witness into the page cache)"
        % (proto, circuit))
    glibc = R.Variant("glibc", "glibc", None)
    try:
        w = prove_once(runner, glibc, t, base, circuit, proto, tmp, timeout)
        say("    warm-up: %.1f s wall, verified" % w["wall_s"])
    except RuntimeError as e:
        res["errors"].append("%s warm-up: %s" % (proto, e))
        runner.fail(glibc, "real", [proto, "warm-up"], str(e))
        return
    runner.family_started = False  # a fresh daemon for this protocol in `make bench`
    samples = res["samples"].setdefault(proto, {v.name: [] for v in live})
    for k in range(n):
        for v in live[k % len(live):] + live[:k % len(live)]:  # rotate who goes first
            try:
                s = R.with_daemon_for(runner, v, lambda: prove_once(runner, v, t, base, circuit,
                                                                    proto, tmp, timeout))
            except RuntimeError as e:
                msg = "%s %s proof %d: %s" % (proto, v.name, k + 1, e)
                res["errors"].append(msg)
                runner.fail(v, "real", [proto, k + 1], str(e))
                continue
            s["round"] = k
            samples[v.name].append(s)
            z = s.get("zk_stats")
            say("    round %d %-18s %6.2f s wall %6.2f user %5.2f sys %7d minflt %5d MB%s" % (
                k + 1, v.name, s["wall_s"], s["user_s"], s["sys_s"], s["minflt"],
                s["maxrss_kb"] >> 10, "  hits %d/%d lends %d" % (
                    z.get("hits", 0), z.get("hits", 0) + z.get("misses", 0),
                    z.get("daemon_lends", 0)) if z else ""))
        pubs = {json.dumps(s["public"]) for xs in samples.values() for s in xs}
        if len(pubs) > 1:
            msg = "%s: proofs of one witness gave different public signals: %s" % (proto, pubs)
            res["errors"].append(msg)
            runner.fail(live[0], "real", [proto], msg)


def service_pass(runner, R, live, t, base, circuit, proto, n, rounds, tmp, res):
    """A long-lived prover: per allocator, `rounds` node processes proving n times each
    (service.cjs), round robin like the fresh-process rounds (the first allocator rotating),
    so that the machine's drift over the minutes of the pass hits all alike. Every proof
    is verified afterwards (untimed, no preload) and its public signals compared with the
    fresh-process proofs'."""
    timeout = 900 * n  # the fresh-process limit per proof
    svc = res["service"]
    svc["proofs"][proto] = n
    svc.setdefault("rounds", {})[proto] = rounds
    samples = svc["samples"].setdefault(proto, {})
    say("  %s %s: long-lived prover, %d proofs in one node process per allocator, %d round%s "
        "(bench/real/service.cjs)" % (proto, circuit, n, rounds, "s" if rounds > 1 else ""))
    ref = {json.dumps(s["public"]) for xs in res["samples"].get(proto, {}).values() for s in xs}
    for r in range(rounds):
        k = (n + r) % len(live) if live else 0  # the rotation goes on from the last round's
        order = live[k:] + live[:k]
        svc["order"].setdefault(proto, []).append([v.name for v in order])
        for v in order:
            serve_round(runner, R, v, t, base, circuit, proto, n, r, tmp, timeout, ref, res,
                        samples.setdefault(v.name, []))


def serve_round(runner, R, v, t, base, circuit, proto, n, r, tmp, timeout, ref, res, runs):
    """One service process of the pass; its sample (with "round") goes onto runs."""
    try:
        s = R.with_daemon_for(runner, v, lambda: serve_once(runner, v, t, base, circuit, proto,
                                                            n, tmp, timeout))
    except RuntimeError as e:
        msg = "%s %s service: %s" % (proto, v.name, e)
        res["errors"].append(msg)
        runner.fail(v, "real", [proto, "service"], str(e))
        return
    pubs = {json.dumps(p) for p in s.pop("publics")}
    if len(pubs) > 1 or (ref and pubs != ref):
        msg = "%s %s service: public signals %s differ from the fresh-process proofs' %s" % (
            proto, v.name, sorted(pubs), sorted(ref))
        res["errors"].append(msg)
        runner.fail(v, "real", [proto, "service"], msg)
        return
    s["public"] = json.loads(pubs.pop())
    s["round"] = r
    runs.append(s)
    ss = real_report.steady_state_of([s])
    z = s.get("zk_stats")
    say("    service %-18s %6.2f s wall (proofs %s s) %6.2f user %5.2f sys %5d MB%s" % (
        v.name, s["wall_s"], " ".join("%.2f" % w for w in s["proof_walls_s"]), s["user_s"],
        s["sys_s"], s["maxrss_kb"] >> 10, "  hits %d/%d, steady state %s" % (
            z.get("hits", 0), z.get("hits", 0) + z.get("misses", 0),
            "%.1f%%" % ss["hit_rate_pct"] if ss else "—") if z else ""))


def serve_once(runner, v, t, base, circuit, proto, n, tmp, timeout):
    """One service.cjs process under v, then every proof verified; returns a sample dict
    (with "publics": the proofs' public signals). Raises RuntimeError."""
    out = tempfile.mkdtemp(prefix="s-", dir=tmp)
    d = os.path.join(base, real_setup.CIRCUITS[circuit][2])
    argv = [t["node"], os.path.join(HERE, "service.cjs"),
            os.path.join(base, "node_modules", "snarkjs"), proto,
            os.path.join(d, proto + ".zkey"), os.path.join(d, "witness.wtns"), str(n), out]
    env = runner_env(runner, v)
    if v.expect == "zknalloc":
        env["ZK_NALLOC_STATS_SIGNAL"] = "USR2"  # counters after each proof (service.cjs)
    rc, wall, ru, err = timed(argv, env, out, timeout)
    if rc != 0:
        raise RuntimeError("service.cjs exited %d: %s" % (rc, real_setup.strip_ansi(err)[-500:]))
    walls = {}
    for line in err.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[:2] == ["service:", "proof"] and parts[3] == "wall_s":
            walls[int(parts[2])] = float(parts[4])
    if sorted(walls) != list(range(1, n + 1)):
        raise RuntimeError("service.cjs reported proofs %s, expected 1..%d: %s" % (
            sorted(walls), n, real_setup.strip_ansi(err)[-300:]))
    verify = real_setup.prove_argv(t, base, circuit, proto, out)[1]
    publics = []
    for i in range(1, n + 1):
        pub = os.path.join(out, "public-%d.json" % i)
        try:
            verify_proof(verify[:-2] + [pub, os.path.join(out, "proof-%d.json" % i)], out, timeout)
        except RuntimeError as e:
            raise RuntimeError("proof %d: %s" % (i, e))
        publics.append(json.load(open(pub)))
    shutil.rmtree(out, ignore_errors=True)
    s = {"proofs": n, "wall_s": wall, "proof_walls_s": [walls[i] for i in range(1, n + 1)]}
    s.update(usage(ru))
    s["publics"] = publics
    add_zk_stats(s, v, err)
    if v.expect == "zknalloc":
        per = [z for head, z in zk_reports(err) if head == "zknalloc: stats (signal)"]
        if len(per) != n:
            raise RuntimeError("%d ZK_NALLOC_STATS_SIGNAL reports for %d proofs" % (len(per), n))
        s["zk_stats_after_proof"] = per
    return s


def versions(base, t):
    out = {}
    for pkg in ("snarkjs", "circom2", "circomlib"):
        try:
            out[pkg] = json.load(open(os.path.join(base, "node_modules", pkg, "package.json")))["version"]
        except (OSError, ValueError, KeyError):
            out[pkg] = "?"
    try:
        out["node"] = subprocess.run([t["node"], "--version"], capture_output=True,
                                     text=True).stdout.strip()
    except OSError:
        out["node"] = "?"
    return out


def main(argv):
    if len(argv) == 3 and argv[1] == "report":
        with open(os.path.join(argv[2], "results.json")) as f:
            res = json.load(f)
        real_report.write(argv[2], res)
        print(os.path.join(argv[2], "results.md"))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
