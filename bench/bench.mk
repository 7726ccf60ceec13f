# Benchmarks (issue 5), included by the top-level Makefile.
#
#   make bench        everything, results in bench/results/ (real provers, issue 12: bench/results/real/;
#                     their one-off setup, bench/real/setup.py, takes over an hour on 2 cores)
#   make bench-quick  a shorter run (a few minutes), results in bench/results/quick/
#   make bench-scale  contention and cold start at nproc threads and nproc processes at once,
#                     results in bench/results/scale/ (for a machine with many cores)
#   make demo         a guided tour: daemon on a temporary socket, cold start and FFT,
#                     glibc against zk-nalloc, the daemon's stats
#   make bench-peers  the peers only (glibc, jemalloc, mimalloc, tcmalloc); needs no
#                     zk-nalloc build
#   make bench-build  compile the benchmark programs only
#
# The programs use plain malloc/calloc/free; each allocator is swapped in with
# LD_PRELOAD by bench/run.py, one process per run.

BENCH_DIR = $(B)/bench
BENCH_PROGS = zk_patterns contention coldstart prover small lend_rtt fork fault_cost
BENCH_BINS = $(addprefix $(BENCH_DIR)/,$(BENCH_PROGS))
# -fno-builtin-*: the compiler must not fold or drop the allocations under test.
BENCH_CFLAGS = -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -g -pthread \
	-fno-builtin-malloc -fno-builtin-calloc -fno-builtin-free -Ibench -Iproto
BENCH_COMMON = bench/bench_common.c bench/bench_common.h
BENCH_PY = python3 bench/run.py

.PHONY: bench-build bench-peers bench-deps

bench-build: $(BENCH_BINS)

$(BENCH_DIR)/%: bench/%.c $(BENCH_COMMON)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -o $@ $< bench/bench_common.c -ldl -lm

# The LEND round trip speaks the protocol itself, with proto/'s own sources.
$(BENCH_DIR)/lend_rtt: bench/lend_rtt.c $(BENCH_COMMON) $(PROTO_SRC) $(wildcard proto/*.h)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -o $@ $< bench/bench_common.c $(PROTO_SRC) -ldl -lm

# fork reads libzknalloc's zkn_stats layout (found with dlsym, only when preloaded).
$(BENCH_DIR)/fork: client/include/zknalloc.h

# Peer allocators and gnuplot: installed when missing and run as root, else the
# command is printed and the missing ones are skipped.
bench-deps:
	@bench/ensure-peers.sh

bench: all bench-build bench-deps
	$(BENCH_PY) full --build $(B)

bench-quick: all bench-build bench-deps
	$(BENCH_PY) quick --build $(B)

bench-scale: all bench-build bench-deps
	$(BENCH_PY) scale --build $(B)

bench-peers: bench-build bench-deps
	$(BENCH_PY) full --build $(B) --peers-only --out bench/results/peers

demo: all bench-build bench-deps
	$(BENCH_PY) demo --build $(B)
