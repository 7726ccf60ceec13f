#!/usr/bin/env python3
"""Setup for bench/real: snarkjs, a circom circuit, a witness and TEST-ONLY keys.

    python3 bench/real/setup.py [--circuit 2^16|2^14|all] [--dir build/real]

Everything lands under build/real/ (never committed) and is made only when
missing, so a second run is a no-op and an interrupted one resumes at the
step that did not finish (each output is written under a temporary name and
renamed when its step succeeded):

  node_modules/   snarkjs, circom2 (circom compiled to WASM), circomlib, as
                  pinned by bench/real/package-lock.json (`npm ci`)
  pot/potP.ptau   a powers of tau of power P made here with FIXED entropy:
                  TEST-ONLY, its toxic waste is public, never use it for
                  anything but benchmarks
  c16/, c14/      a chain of Poseidon(2) hashes (circomlib) compiled with
                  circom2 --O1 to r1cs + wasm, one witness (input [1, 2]),
                  a groth16 zkey (one contribution with fixed entropy) and a
                  plonk zkey, their verification keys, and setup.json
  PROVE_CMD.txt   the command line of one groth16 and one plonk proof

--O1 (circom's default) keeps the linear constraints: 517 R1CS constraints per
hash, and about 600 PLONK gates, so the 2^16 circuit (126 hashes, 65142 R1CS
constraints) needs a 2^17 domain for plonk and one ptau of power 17 serves
both. (--O2 leaves 240 R1CS constraints per hash but about 2470 PLONK gates:
plonk would need 2^20.) Python 3 standard library only.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# name: (Poseidon hashes, ptau power, folder). 517 R1CS constraints per hash.
CIRCUITS = {
    "2^16": (126, 17, "c16"),
    "2^14": (31, 15, "c14"),
}
TEST_ONLY = ("TEST-ONLY ceremony: powers of tau and zkey contributions made with fixed, "
             "public entropy. Anyone can forge proofs for these keys. Benchmarks only.")
ENTROPY = "zk-nalloc bench/real TEST-ONLY entropy, public, do not use"
CIRCOM = """pragma circom 2.0.0;
// zk-nalloc bench/real: a chain of %(n)d Poseidon(2) hashes (circomlib).
include "circomlib/circuits/poseidon.circom";

template Chain(N) {
    signal input in[2];
    signal output out;
    component h[N];
    for (var i = 0; i < N; i++) {
        h[i] = Poseidon(2);
        h[i].inputs[0] <== i == 0 ? in[0] : h[i - 1].out;
        h[i].inputs[1] <== in[1];
    }
    out <== h[N - 1].out;
}

component main = Chain(%(n)d);
"""

T0 = time.monotonic()


def say(msg):
    print("[setup %4.0fs] %s" % (time.monotonic() - T0, msg), flush=True)


class SetupError(RuntimeError):
    pass


def node_env():
    """The environment of every setup command: no preloaded allocator."""
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith(("ZK_NALLOC_", "MALLOC_", "MIMALLOC_",
                                                        "TCMALLOC_", "GLIBC_TUNABLES"))}
    env.setdefault("NODE_OPTIONS", "--max-old-space-size=8192")
    return env


def tools(base):
    node = shutil.which("node")
    if not node:
        raise SetupError("node not found (apt-get install nodejs npm)")
    return {"node": node,
            "snarkjs": os.path.join(base, "node_modules", "snarkjs", "build", "cli.cjs"),
            "circom2": os.path.join(base, "node_modules", "circom2", "cli.js")}


def run(argv, cwd, what, hint=""):
    """Runs one step, output to cwd/setup.log; raises SetupError with its tail on failure."""
    say("%s%s ..." % (what, hint))
    t = time.monotonic()
    log = os.path.join(cwd, "setup.log")
    with open(log, "ab") as f:
        f.write(("\n== %s\n$ %s\n" % (time.strftime("%H:%M:%S"), " ".join(argv))).encode())
        f.flush()
        p = subprocess.run(argv, cwd=cwd, env=node_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        f.write(p.stdout)
    out = p.stdout.decode("utf-8", "replace")
    # snarkjs reports some errors with exit status 0 and an [ERROR] line
    if p.returncode != 0 or "[ERROR]" in out:
        lines = [l.strip() for l in strip_ansi(out).splitlines() if l.strip()]
        first = next((l for l in lines if "error" in l.lower()), lines[-1] if lines else "")
        raise SetupError("%s failed (exit %d): %s\n%s\n(full log: %s)" % (
            what, p.returncode, first[:300], strip_ansi(out)[-1500:], log))
    say("%s: done in %.1f s" % (what, time.monotonic() - t))
    return strip_ansi(out)


def strip_ansi(text):
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def step(outputs, fn):
    """Runs fn(tmp_names) unless every output exists; renames tmp names into place."""
    if all(os.path.exists(o) for o in outputs):
        return False
    tmps = [o + ".part" for o in outputs]
    for t in tmps:
        if os.path.isdir(t):
            shutil.rmtree(t)
        elif os.path.exists(t):
            os.unlink(t)
    fn(tmps)
    for t, o in zip(tmps, outputs):
        if os.path.isdir(o):
            shutil.rmtree(o)
        os.replace(t, o)
    return True


def npm_install(base):
    """node_modules from the committed lock file (npm ci), reinstalled when the lock changes."""
    lock_src = os.path.join(HERE, "package-lock.json")
    stamp = os.path.join(base, "node_modules", ".zkn-lock")
    want = open(lock_src, "rb").read()
    if os.path.exists(stamp) and open(stamp, "rb").read() == want:
        return
    npm = shutil.which("npm")
    if not npm:
        raise SetupError("npm not found (apt-get install npm)")
    for f in ("package.json", "package-lock.json"):
        shutil.copyfile(os.path.join(HERE, f), os.path.join(base, f))
    run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], base,
        "npm ci (snarkjs, circom2, circomlib from bench/real/package-lock.json)")
    with open(stamp, "wb") as f:
        f.write(want)


def ptau(base, t, power):
    """pot/potP.ptau, prepared for phase 2; a larger one already made is used instead."""
    pot = os.path.join(base, "pot")
    os.makedirs(pot, exist_ok=True)
    for p in range(power, 23):
        final = os.path.join(pot, "pot%d.ptau" % p)
        if os.path.exists(final):
            return final, p
    final = os.path.join(pot, "pot%d.ptau" % power)
    s = [t["node"], t["snarkjs"]]
    p0, p1 = os.path.join(pot, "pot%d_0.ptau" % power), os.path.join(pot, "pot%d_1.ptau" % power)
    # measured on the 2-core VM, shared: prepare phase2 is snarkjs's slow step
    contrib = {15: "about 35 s", 16: "2-3 minutes", 17: "about 5 minutes"}.get(power, "minutes")
    prepare = {15: "about 15 minutes", 16: "about 30 minutes", 17: "about an hour"}.get(power, "hours")
    step([p0], lambda o: run(s + ["powersoftau", "new", "bn128", str(power), o[0]], pot,
                             "TEST-ONLY powers of tau 2^%d: new" % power))
    step([p1], lambda o: run(s + ["powersoftau", "contribute", p0, o[0],
                                  "--name=zk-nalloc bench TEST-ONLY", "-e=" + ENTROPY], pot,
                             "TEST-ONLY powers of tau 2^%d: contribute (fixed entropy)" % power,
                             " (%s on 2 cores)" % contrib))
    step([final], lambda o: run(s + ["powersoftau", "prepare", "phase2", p1, o[0]], pot,
                                "TEST-ONLY powers of tau 2^%d: prepare phase2" % power,
                                " (%s on 2 cores, once)" % prepare))
    for f in (p0, p1):
        os.unlink(f)
    with open(os.path.join(pot, "TEST-ONLY.txt"), "w") as f:
        f.write(TEST_ONLY + "\nMade by bench/real/setup.py with entropy %r.\n" % ENTROPY)
    return final, power


def circuit(base, t, name):
    """Compiles the circuit, computes the witness, makes both zkeys; returns setup.json's dict."""
    hashes, power, folder = CIRCUITS[name]
    d = os.path.join(base, folder)
    os.makedirs(d, exist_ok=True)
    info_path = os.path.join(d, "setup.json")
    info = json.load(open(info_path)) if os.path.exists(info_path) else {}
    want_src = CIRCOM % {"n": hashes}
    src = os.path.join(d, "chain.circom")
    if not os.path.exists(src) or open(src).read() != want_src:
        for f in os.listdir(d):  # another circuit: everything made from it goes
            p = os.path.join(d, f)
            shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
        info = {}
        with open(src, "w") as f:
            f.write(want_src)
    s = [t["node"], t["snarkjs"]]
    r1cs, wasm = os.path.join(d, "chain.r1cs"), os.path.join(d, "chain_js", "chain.wasm")
    if not (os.path.exists(r1cs) and os.path.exists(wasm)):
        # circom2 runs as WASI and sees only paths below its working directory
        out = run([t["node"], t["circom2"], os.path.relpath(src, base), "--O1", "--r1cs", "--wasm",
                   "-o", os.path.relpath(d, base), "-l", "node_modules"], base,
                  "circuit %s: circom2 --O1 (%d Poseidon(2) hashes)" % (name, hashes))
        m = re.search(r"non-linear constraints: (\d+)", out)
        m2 = re.search(r"(?<!non-)linear constraints: (\d+)", out)
        if not (m and m2 and os.path.exists(r1cs) and os.path.exists(wasm)):
            raise SetupError("circom2 wrote no r1cs/wasm or no constraint count:\n" + out[-800:])
        info["r1cs_constraints"] = int(m.group(1)) + int(m2.group(1))
        info["hashes"] = hashes
    say("circuit %s: %d R1CS constraints (%d Poseidon(2) hashes), groth16 domain 2^%d" % (
        name, info["r1cs_constraints"], hashes, (info["r1cs_constraints"] + 2 - 1).bit_length()))
    inp, wtns = os.path.join(d, "input.json"), os.path.join(d, "witness.wtns")
    if not os.path.exists(inp):
        with open(inp, "w") as f:
            json.dump({"in": ["1", "2"]}, f)
    step([wtns], lambda o: run(s + ["wtns", "calculate", wasm, inp, o[0]], d,
                               "circuit %s: witness (snarkjs wtns calculate)" % name))
    pt, pp = ptau(base, t, power)
    info["ptau"], info["ptau_power"] = os.path.relpath(pt, base), pp
    g0, g = os.path.join(d, "groth16_0.zkey"), os.path.join(d, "groth16.zkey")
    if not os.path.exists(g):
        step([g0], lambda o: run(s + ["groth16", "setup", r1cs, pt, o[0]], d,
                                 "circuit %s: groth16 setup" % name))
        step([g], lambda o: run(s + ["zkey", "contribute", g0, o[0], "--name=TEST-ONLY",
                                     "-e=" + ENTROPY], d,
                                "circuit %s: groth16 zkey contribute (fixed entropy)" % name))
        os.unlink(g0)
    step([os.path.join(d, "groth16_vkey.json")], lambda o: run(
        s + ["zkey", "export", "verificationkey", g, o[0]], d, "circuit %s: groth16 vkey" % name))
    pk = os.path.join(d, "plonk.zkey")

    def plonk(o):
        out = run(s + ["plonk", "setup", r1cs, pt, o[0]], d, "circuit %s: plonk setup" % name)
        m = re.search(r"Plonk constraints: (\d+)", out)
        info["plonk_constraints"] = int(m.group(1)) if m else None
    step([pk], plonk)
    if info.get("plonk_constraints"):
        say("circuit %s: %d PLONK constraints (domain 2^%d)" % (
            name, info["plonk_constraints"], (info["plonk_constraints"] - 1).bit_length()))
    step([os.path.join(d, "plonk_vkey.json")], lambda o: run(
        s + ["zkey", "export", "verificationkey", pk, o[0]], d, "circuit %s: plonk vkey" % name))
    info["test_only"] = TEST_ONLY
    with open(info_path, "w") as f:
        json.dump(info, f, indent=1)
    return info


def prove_argv(t, base, name, protocol, out_dir):
    """argv of one proof (the timed process) and of its verification (untimed)."""
    d = os.path.join(base, CIRCUITS[name][2])
    proof, public = os.path.join(out_dir, "proof.json"), os.path.join(out_dir, "public.json")
    prove = [t["node"], t["snarkjs"], protocol, "prove", os.path.join(d, protocol + ".zkey"),
             os.path.join(d, "witness.wtns"), proof, public]
    verify = [t["node"], t["snarkjs"], protocol, "verify", os.path.join(d, protocol + "_vkey.json"),
              public, proof]
    return prove, verify


def write_prove_cmd(base, t, infos):
    lines = ["# zk-nalloc bench/real: one proof as `bench/run.py --progs real` times it: a fresh",
             "# node process per proof, the witness made once and reused. Then its verification",
             "# (untimed, no preload). Preload an allocator in front, e.g.",
             "#   LD_PRELOAD=%s/build/libzknalloc.so ZK_NALLOC_SHOW_STATS=1 <prove command>" % ROOT,
             "# " + TEST_ONLY]
    for name in CIRCUITS:
        if name not in infos:
            continue
        i = infos[name]
        lines.append("")
        lines.append("# circuit %s: %d R1CS constraints, %s PLONK constraints, ptau 2^%d" % (
            name, i["r1cs_constraints"], i.get("plonk_constraints"), i["ptau_power"]))
        for proto in ("groth16", "plonk"):
            p, v = prove_argv(t, base, name, proto, "/tmp")
            lines.append("# %s %s: prove, then verify" % (proto, name))
            lines.append(" ".join(p))
            lines.append(" ".join(v))
    with open(os.path.join(base, "PROVE_CMD.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def setup(base, names):
    """Makes whatever is missing; returns {name: setup.json dict}. Raises SetupError."""
    base = os.path.abspath(base)
    os.makedirs(base, exist_ok=True)
    t0 = time.monotonic()
    say("bench/real setup in %s (%s)" % (base, ", ".join(names)))
    say(TEST_ONLY)
    npm_install(base)
    t = tools(base)
    infos = {}
    for name in names:
        infos[name] = circuit(base, t, name)
    for name in CIRCUITS:  # PROVE_CMD.txt names every circuit made so far
        p = os.path.join(base, CIRCUITS[name][2], "setup.json")
        if name not in infos and os.path.exists(p):
            infos[name] = json.load(open(p))
    write_prove_cmd(base, t, infos)
    say("setup ready in %.0f s; one proof: %s" % (time.monotonic() - t0,
                                                 os.path.join(base, "PROVE_CMD.txt")))
    return infos


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--circuit", default="all", choices=list(CIRCUITS) + ["all"])
    ap.add_argument("--dir", default=os.path.join(ROOT, "build", "real"))
    a = ap.parse_args()
    try:
        setup(a.dir, list(CIRCUITS) if a.circuit == "all" else [a.circuit])
    except SetupError as e:
        print("bench/real setup: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
