"""bench/real's results.md and results.json (issue 12's targets). Python 3 stdlib only."""
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/
from figures import num  # noqa: E402  (bench/figures.py)

CAP = 1 << 30  # libzknalloc's default cache cap: min(RAM/8, 1 GiB)


SERVICE_METHOD = (
    "A proving service that keeps one process proves many times in it: after the "
    "fresh-process rounds, each allocator runs `node bench/real/service.cjs`, which proves "
    "N times with `snarkjs.groth16.prove(zkey, witness)`, once per round, round robin with the "
    "first allocator rotating (%s; the zk-nalloc+daemon processes use the same zknallocd as "
    "the fresh-process rounds); "
    "every proof is verified afterwards (untimed, no preload) and its public signals must equal "
    "the fresh-process proofs'. Per-proof walls are timed inside the process (`process.hrtime` "
    "around the prove call: no node start-up or snarkjs load, which the fresh-process walls "
    "include); proofs 2..N are the steady state (the curve and its worker threads already up, "
    "the allocator's cache warm). Proofs 2..N wall: median (min–max) of proofs 2..N of all the "
    "allocator's processes. ÷ best peer: that median over the lowest such median among the "
    "peers. First proof, process wall, sys (÷ N), peak RSS and the process hit rate: medians "
    "over the processes, each the whole process's, from os.wait4's rusage and "
    "`ZK_NALLOC_SHOW_STATS=1` at exit. Hit rate, proofs 2..N (the steady state): the "
    "library's counters after proof 1 and after proof N, which it reports on a signal "
    "(`ZK_NALLOC_STATS_SIGNAL=USR2`; service.cjs sends it to itself after each proof), summed "
    "over the processes.")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def col(samples, key):
    return [s[key] for s in samples if key in s]


def cpu(samples):
    """user + sys of each proof: the CPU it cost, whichever column the machine charged."""
    return [s["user_s"] + s["sys_s"] for s in samples if "user_s" in s and "sys_s" in s]


def hit_rate(s):
    z = s.get("zk_stats") or {}
    n = z.get("hits", 0) + z.get("misses", 0)
    return 100.0 * z.get("hits", 0) / n if n else None


def best_peer(res, proto):
    """(name, samples) of the peer with the lowest median wall, or (None, [])."""
    best = (None, [])
    for name in res.get("peers", []):
        xs = res["samples"].get(proto, {}).get(name, [])
        if xs and (best[0] is None or med(col(xs, "wall_s")) < med(col(best[1], "wall_s"))):
            best = (name, xs)
    return best


def service(res, proto):
    """{variant: [sample of each service process]} of the long-lived prover pass ({} when it
    did not run). A results.json from before the pass had rounds holds one sample, not a
    list."""
    raw = ((res.get("service") or {}).get("samples") or {}).get(proto) or {}
    return {name: runs if isinstance(runs, list) else [runs] for name, runs in raw.items()}


def later(runs):
    """Walls of proofs 2..N of every service process of a variant."""
    return [w for s in runs for w in s.get("proof_walls_s", [])[1:]]


def best_service_peer(res, proto):
    """(name, runs) of the peer with the lowest median wall of proofs 2..N, or (None, [])."""
    best = (None, [])
    for name in res.get("peers", []):
        runs = service(res, proto).get(name)
        if runs and later(runs) and (best[0] is None or med(later(runs)) < med(later(best[1]))):
            best = (name, runs)
    return best


def steady_state_of(runs):
    """Issue 12's steady-state hit rate of a zk-nalloc variant: its service processes' hits
    over their large requests during proofs 2..N, from the library's counters after proof 1
    and after proof N (ZK_NALLOC_STATS_SIGNAL reports), summed over the processes.
    {"hits", "calls", "hit_rate_pct"}, or None when not measured."""
    hits = calls = 0
    counted = False
    for s in runs:
        per = s.get("zk_stats_after_proof") or []
        if len(per) < 2:
            continue
        first, last = per[0], per[-1]
        h = last.get("hits", 0) - first.get("hits", 0)
        hits += h
        calls += h + last.get("misses", 0) - first.get("misses", 0)
        counted = True
    if not counted:
        return None
    return {"hits": hits, "calls": calls,
            "hit_rate_pct": 100.0 * hits / calls if calls else float("nan")}


def steady_state(res, proto, name):
    return steady_state_of(service(res, proto).get(name) or [])


def paired(xs, ys):
    """Per-round ratios x/y of wall times (the same interleaved round)."""
    by = {s["round"]: s["wall_s"] for s in ys}
    return sorted(s["wall_s"] / by[s["round"]] for s in xs if s["round"] in by and by[s["round"]])


def wall_verdict(ratio, pr, limit):
    if ratio <= limit:
        return "met"
    if pr and pr[0] <= limit:
        return "not met, within noise (a round reached %.2fx)" % limit
    return "**not met**"


def targets(res):
    rows = []
    S = res["samples"]
    zks = [n for n in res.get("variants", []) if n.startswith("zk-nalloc")]
    if not zks:
        return [("all issue 12 targets", "zk-nalloc not run", "not measured")]

    def vs_best(proto, name, limit, what):
        bp, bxs = best_peer(res, proto)
        xs = S.get(proto, {}).get(name, [])
        if not xs or not bp:
            rows.append((what, "not measured", "not measured"))
            return
        r = med(col(xs, "wall_s")) / med(col(bxs, "wall_s"))
        pr = paired(xs, bxs)
        rows.append((what, "%s s vs %s %s s = %.2fx (per round %s)" % (
            num(med(col(xs, "wall_s"))), bp, num(med(col(bxs, "wall_s"))), r,
            "%.2f–%.2f" % (pr[0], pr[-1]) if pr else "—"), wall_verdict(r, pr, limit)))

    # With a daemon: 0.90x the best peer; without: 1.00x and its sys. Also for
    # the library stacked on an allocator behind it (zk-nalloc/tcmalloc).
    for name in zks:
        if "+daemon" in name:
            vs_best("groth16", name, 0.90, "groth16, %s: wall ≤ 0.90x best peer" % name)
        else:
            vs_best("groth16", name, 1.00, "groth16, %s: wall ≤ 1.00x best peer" % name)
    bp, bxs = best_peer(res, "groth16")
    for name in (n for n in zks if "+daemon" not in n):
        xs = S.get("groth16", {}).get(name, [])
        if not xs or not bp:
            continue
        zs, ps = med(col(xs, "sys_s")), med(col(bxs, "sys_s"))
        low = min((med(col(S["groth16"][n], "sys_s")), n) for n in res["peers"] if S["groth16"].get(n))
        rows.append(("groth16, %s: sys ≤ 1.0x best peer's" % name,
                     "%s s vs %s %s s = %.2fx (lowest peer sys: %s %s s)" % (
                         num(zs), bp, num(ps), zs / ps if ps else float("nan"), low[1], num(low[0])),
                     "met" if zs <= ps else "**not met**"))
        zc, pc = med(cpu(xs)), med(cpu(bxs))
        rows.append(("groth16, %s: user+sys against best peer's (no target: where the "
                     "machine charges fresh pages, see below)" % name,
                     "%s s vs %s %s s = %.2fx" % (num(zc), bp, num(pc), zc / pc if pc else float("nan")),
                     "lower" if zc <= pc else "higher"))
    for proto in S:
        for name in zks:
            xs = S[proto].get(name, [])
            hr = [h for h in (hit_rate(s) for s in xs) if h is not None]
            if xs:
                rows.append(("%s, %s: hit rate of a fresh process (no target: its first touches "
                             "are misses; the 95%% target is the steady state, below)" % (proto, name),
                             "%.1f%% (proofs %.1f–%.1f%%)" % (med(hr), min(hr), max(hr)) if hr
                             else "no large allocations counted", "reported"))
    for proto in S:
        g = S[proto].get("glibc", [])
        for name in zks:
            xs = S[proto].get(name, [])
            if xs and g:
                over = (med(col(xs, "maxrss_kb")) - med(col(g, "maxrss_kb"))) * 1024
                cap = med([s["zk_stats"].get("cache_cap", CAP) for s in xs if s.get("zk_stats")]) or CAP
                rows.append(("%s, %s: peak RSS over glibc vs cache cap (%d MiB)" % (
                    proto, name, int(cap) >> 20), "%+.0f MiB (%.0f vs %.0f MiB)" % (
                    over / (1 << 20), med(col(xs, "maxrss_kb")) / 1024,
                    med(col(g, "maxrss_kb")) / 1024), "within the cap" if over <= cap else
                    "**over the cap**"))
    for name in zks:
        if "plonk" in S:
            vs_best("plonk", name, 1.00, "plonk, %s: wall ≤ 1.00x best peer (parity)" % name)
    for proto in ((res.get("service") or {}).get("samples") or {}):
        for name in zks:
            ss = steady_state(res, proto, name)
            z = ((service(res, proto).get(name) or [{}])[0]).get("zk_stats") or {}
            what = ("%s long-lived prover, %s: steady-state hit rate ≥ 95%% with the default "
                    "cache size" % (proto, name))
            if not ss:
                rows.append((what, "not measured", "not measured"))
                continue
            rows.append((what, "%.1f%% (%d hits of %d large requests in proofs 2..%d of %d "
                         "process%s; cache cap %d MiB)" % (
                             ss["hit_rate_pct"], ss["hits"], ss["calls"],
                             res["service"]["proofs"][proto], len(service(res, proto)[name]),
                             "es" if len(service(res, proto)[name]) > 1 else "",
                             z.get("cache_cap", CAP) >> 20),
                         "met" if ss["hit_rate_pct"] >= 95 else "**not met**"))
    return rows


def table(res, proto):
    S = res["samples"][proto]
    bp, bxs = best_peer(res, proto)
    L = ["| allocator | proofs | wall s | ÷ best peer | user s | sys s | user+sys s | minor faults "
         "| peak RSS MB | hit rate | zk-nalloc: hits / misses / daemon lends / fallbacks |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in res["variants"]:
        xs = S.get(name, [])
        if not xs:
            L.append("| %s | 0 | failed (see Failures) | | | | | | | | |" % name)
            continue
        w = col(xs, "wall_s")
        hr = [h for h in (hit_rate(s) for s in xs) if h is not None]
        zs = [s["zk_stats"] for s in xs if s.get("zk_stats")]
        zcell = " / ".join("%.0f" % med([z.get(k, 0) for z in zs]) for k in
                           ("hits", "misses", "daemon_lends", "fallbacks")) if zs else "—"
        L.append("| %s | %d | %s (%s–%s) | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, len(xs), num(med(w)), num(min(w)), num(max(w)),
            "%.2fx" % (med(w) / med(col(bxs, "wall_s"))) if bp else "—",
            num(med(col(xs, "user_s"))), num(med(col(xs, "sys_s"))), num(med(cpu(xs))),
            "%.0f" % med(col(xs, "minflt")), "%.0f" % (med(col(xs, "maxrss_kb")) / 1024),
            "%.1f%%" % med(hr) if hr else "—", zcell))
    return L


def service_table(res, proto):
    S = service(res, proto)
    bp, bs = best_service_peer(res, proto)
    L = ["| allocator | proofs | proofs 2..N wall s | ÷ best peer | first proof s | process wall s "
         "| sys s per proof | peak RSS MB | hit rate, process | hit rate, proofs 2..N "
         "| zk-nalloc: hits / misses / daemon lends / fallbacks |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in res["variants"]:
        runs = S.get(name)
        if not runs:
            L.append("| %s | 0 | failed (see Failures) | | | | | | | | |" % name)
            continue
        w = later(runs)
        hr = [h for h in (hit_rate(s) for s in runs) if h is not None]
        ss = steady_state_of(runs)
        zs = [s["zk_stats"] for s in runs if s.get("zk_stats")]
        L.append("| %s | %s | %s | %s | %s | %s | %s | %.0f | %s | %s | %s |" % (
            name, " + ".join("%d" % s["proofs"] for s in runs),
            "%s (%s–%s)" % (num(med(w)), num(min(w)), num(max(w))) if w else "—",
            "%.2fx" % (med(w) / med(later(bs))) if bp and w else "—",
            num(med([s["proof_walls_s"][0] for s in runs])), num(med(col(runs, "wall_s"))),
            num(med([s["sys_s"] / s["proofs"] for s in runs])),
            med(col(runs, "maxrss_kb")) / 1024, "%.1f%%" % med(hr) if hr else "—",
            "%.1f%%" % ss["hit_rate_pct"] if ss else "—",
            " / ".join("%.0f" % med([z.get(k, 0) for z in zs])
                       for k in ("hits", "misses", "daemon_lends", "fallbacks")) if zs else "—"))
    return L


def service_section(res, heading, method=False):
    """The long-lived prover tables ([] for a results.json from before the pass existed)."""
    svc = res.get("service") or {}
    L = []
    for proto in svc.get("samples") or {}:
        rounds = (svc.get("rounds") or {}).get(proto, 1)
        L += ["", "%s %s, circuit %s: long-lived prover (one process, %d proofs; %d process%s "
              "per allocator)" % (heading, proto, res["circuit"], svc["proofs"][proto], rounds,
                                  "es" if rounds > 1 else ""), ""]
        if method:
            orders = svc["order"][proto]
            if orders and not isinstance(orders[0], list):
                orders = [orders]  # a results.json from before the pass had rounds
            L += [SERVICE_METHOD % "; ".join("round %d: %s" % (i + 1, " → ".join(o))
                                             for i, o in enumerate(orders)), ""]
        L += service_table(res, proto)
    if svc.get("skipped"):
        L += ["", "Long-lived prover pass: " + "; ".join(
            "%s %s" % kv for kv in svc["skipped"].items()) + "."]
    return L


def markdown(res):
    L = ["# bench/real: snarkjs proofs under each allocator (issue 12)", ""]
    if res.get("skip"):
        L += ["Skipped: %s" % res["skip"], ""]
        return L
    ci = res.get("circuit_info", {})
    v = res.get("versions", {})
    L.append("Measured %s, `make bench%s` (`bench/run.py %s --progs real`), %s cores, load average at "
             "end %s. snarkjs %s, circom2 %s, circomlib %s, node %s." % (
                 res.get("started_utc"), "" if res["mode"] == "full" else "-quick", res["mode"],
                 res.get("cores", "?"), res.get("loadavg_end", "?"), v.get("snarkjs"),
                 v.get("circom2"), v.get("circomlib"), v.get("node")))
    L.append("")
    L.append("Circuit %s: a chain of %s Poseidon(2) hashes (circomlib, circom2 --O1), %s R1CS "
             "constraints, %s PLONK constraints; powers of tau 2^%s. **%s** Setup (cached in "
             "build/real/): %.0f s this run." % (
                 res["circuit"], ci.get("hashes"), ci.get("r1cs_constraints"),
                 ci.get("plonk_constraints"), ci.get("ptau_power"), res["test_only"],
                 res.get("setup_s", 0)))
    L.append("")
    L.append("Each proof is a fresh `node snarkjs <protocol> prove zkey witness` process (the "
             "witness made once and reused), the allocator swapped in with LD_PRELOAD; proofs "
             "run round robin across the allocators, one proof of each per round, the first "
             "allocator rotating. Every proof was verified (`snarkjs <protocol> verify`, untimed, "
             "no preload). Figures: median (min–max) of the proofs for wall, medians for the "
             "rest, from os.wait4's rusage of the node process (user and sys include all its "
             "threads). ÷ best peer: median wall over the lowest median wall among glibc, "
             "jemalloc, mimalloc and tcmalloc. Hit rate: libzknalloc's share of large (≥ 64 KiB) "
             "requests served from its cache (`ZK_NALLOC_SHOW_STATS=1`). zk-nalloc+daemon: a "
             "zknallocd on a temporary socket, `%s`; zk-nalloc: `ZK_NALLOC_SOCKET` where nothing "
             "listens. /tcmalloc: tcmalloc preloaded after libzknalloc "
             "(`LD_PRELOAD=\"libzknalloc.so libtcmalloc_minimal.so.4\"`), so tcmalloc serves "
             "the requests under 64 KiB that otherwise go to glibc." % " ".join(res.get("daemon_args", [])))
    if res.get("skipped"):
        L += ["", "Not run: " + "; ".join("%s (%s)" % kv for kv in res["skipped"].items()) + "."]
    for proto in res["samples"]:
        L += ["", "## %s, circuit %s" % (proto, res["circuit"]), ""] + table(res, proto)
    L += service_section(res, "##", method=True)
    L += ["", "## Targets (issue 12)", "", "| target | measured | verdict |", "|---|---|---|"]
    L += ["| %s | %s | %s |" % t for t in targets(res)]
    L += ["", "A wall target is *met* when the median ratio is within it, *not met, within noise* "
          "when the median misses it but at least one interleaved round's ratio reaches it. Best "
          "peer: the peer with the lowest median wall; its sys is the sys reference."]
    L += fault_cost_section(res)
    ds = res.get("daemon_stats")
    if ds:
        L += ["", "zknallocd at the end: backing %s, totals %s." % (
            (ds.get("backing") or {}).get("kind"), json.dumps(ds.get("totals", {}), sort_keys=True))]
    if res.get("errors"):
        L += ["", "## Failures", ""] + ["- `%s`" % e.replace("`", "'").replace("\n", " ")[:600]
                                         for e in res["errors"]]
    return L


def fault_cost_section(res):
    """What bench/fault_cost measured this run, and what it means for the sys column."""
    fc = res.get("fault_cost")
    if not fc:
        return []
    L = ["", "## Where this machine charges fresh memory", ""]
    if fc.get("error"):
        return L + ["Not measured: %s" % fc["error"]]
    k, h = fc.get("4k"), fc.get("thp")
    if not k or not h:
        return L + ["Not measured: bench/fault_cost printed %s" % sorted(fc)]
    per = lambda x, key: x[key] / x["mib"]  # noqa: E731  (ms per MiB)
    L += ["`bench/fault_cost %d %d` before the proofs: a fresh child process writes one byte per "
          "4 KiB into %d MiB of new private memory, after the machine sat idle long enough to "
          "hand freed memory back to its host; %s each:" % (
              k["mib"], k["rounds"], k["mib"],
              "median of %d children" % k["rounds"] if k["rounds"] > 1 else "one child"), "",
          "| pages | wall ms per MiB | user ms per MiB | sys ms per MiB |", "|---|---|---|---|",
          "| 4 KiB | %.2f | %.2f | %.2f |" % (per(k, "wall_ms"), per(k, "user_ms"), per(k, "sys_ms")),
          "| 2 MiB (THP) | %.2f | %.2f | %.2f |" % (
              per(h, "wall_ms"), per(h, "user_ms"), per(h, "sys_ms")), ""]
    user_share = k["user_ms"] / k["wall_ms"] if k["wall_ms"] else 0.0
    L.append("libzknalloc faults its blocks in as huge pages; glibc, jemalloc, mimalloc and "
             "tcmalloc mostly as 4 KiB pages. " + (
                 "Here %.0f%% of a 4 KiB first touch's time is charged to user time, by a loop "
                 "that does nothing but touch memory; a huge page's is charged to sys. So the sys "
                 "column understates what 4 KiB faults cost the peers: user+sys and wall compare "
                 "the allocators fairly, sys alone does not." % (100 * user_share)
                 if user_share >= 0.10 else
                 "Here both kinds are charged to sys, so the sys column compares them fairly."))
    return L


def write(out_dir, res):
    os.makedirs(out_dir, exist_ok=True)
    res.setdefault("cores", os.cpu_count())
    try:
        res.setdefault("loadavg_end", " ".join(open("/proc/loadavg").read().split()[:3]))
    except OSError:
        pass
    res.setdefault("kernel", platform.release())
    res["variants"] = [getattr(v, "name", v) for v in res.get("variants", [])]
    res.setdefault("peers", [])
    res["written_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    md = "\n".join(markdown(res)) + "\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    return md


def summary(res, link):
    """The section bench/run.py puts into the main results.md."""
    L = ["## Real provers: snarkjs, a fresh node process per proof%s (issue 12)" % (
        " and a long-lived one" if (res.get("service") or {}).get("samples") else ""), "",
         "Circuit %s (%s R1CS constraints), median of the proofs, every proof verified; "
         "TEST-ONLY keys. Details, method and failures: [%s](%s)." % (
             res["circuit"], res.get("circuit_info", {}).get("r1cs_constraints"), link, link)]
    for proto in res["samples"]:
        L += ["", "### %s" % proto, ""] + table(res, proto)
    L += service_section(res, "###")
    L += ["", "### Targets (issue 12)", "", "| target | measured | verdict |", "|---|---|---|"]
    L += ["| %s | %s | %s |" % t for t in targets(res)]
    return L
