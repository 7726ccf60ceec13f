// bench/real: a long-lived prover, N proofs in one node process (issue 12).
//
//   node service.cjs SNARKJS_DIR PROTO ZKEY WTNS N OUTDIR
//
// Loads snarkjs from SNARKJS_DIR (build/real/node_modules/snarkjs), proves N
// times with snarkjs[PROTO].prove(ZKEY, WTNS) in this one process (the curve,
// its worker threads and the allocator's cache stay up between proofs, as in a
// proving service), writes proof i to OUTDIR/proof-i.json and
// OUTDIR/public-i.json (i = 1..N), prints `service: proof i wall_s X` per proof
// to stderr, and exits 0. With ZK_NALLOC_STATS_SIGNAL set (only where
// libzknalloc is preloaded: the signal would end any other process) it sends
// itself that signal after each proof, so the library reports its counters. Any error: its message to stderr, exit status 1.
// Called by bench/real/real.py, which verifies every proof afterwards.
"use strict";
const fs = require("fs");
const path = require("path");

async function main(argv) {
    if (argv.length !== 6) {
        throw new Error("usage: node service.cjs SNARKJS_DIR PROTO ZKEY WTNS N OUTDIR");
    }
    const [dir, proto, zkey, wtns, nArg, out] = argv;
    const n = Number(nArg);
    if (!Number.isInteger(n) || n < 1) {
        throw new Error("N must be a positive integer, got " + nArg);
    }
    const sig = process.env.ZK_NALLOC_STATS_SIGNAL;
    const statsSignal = sig ? (sig.startsWith("SIG") ? sig : "SIG" + sig) : null;
    const snarkjs = require(path.resolve(dir));
    if (!snarkjs[proto] || typeof snarkjs[proto].prove !== "function") {
        throw new Error("snarkjs has no " + proto + ".prove");
    }
    for (let i = 1; i <= n; i++) {
        const t0 = process.hrtime.bigint();
        const { proof, publicSignals } = await snarkjs[proto].prove(zkey, wtns);
        const wall = Number(process.hrtime.bigint() - t0) / 1e9;
        // the proof alone is timed; its two small files are written after
        fs.writeFileSync(path.join(out, "proof-" + i + ".json"), JSON.stringify(proof, null, 1));
        fs.writeFileSync(path.join(out, "public-" + i + ".json"), JSON.stringify(publicSignals, null, 1));
        process.stderr.write("service: proof " + i + " wall_s " + wall.toFixed(4) + "\n");
        if (statsSignal) {
            // libzknalloc's counters after proof i, on its ZK_NALLOC_STATS_SIGNAL report;
            // the pause lets a report caught by another thread come out before the next.
            process.kill(process.pid, statsSignal);
            await new Promise((resolve) => setTimeout(resolve, 100));
        }
    }
}

main(process.argv.slice(2)).then(
    () => process.exit(0),  // snarkjs keeps its worker threads alive: exit explicitly
    (e) => {
        process.stderr.write("service: " + ((e && e.stack) || e) + "\n");
        process.exit(1);
    });
