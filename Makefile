# zk-nalloc build. `make` builds everything, `make run` starts the daemon in
# the foreground, `make test` runs every check suite, `make sanitize` runs them
# again under AddressSanitizer and UBSan.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR = $(PREFIX)/bin
SBINDIR = $(PREFIX)/sbin
LIBDIR = $(PREFIX)/lib
INCLUDEDIR = $(PREFIX)/include
MANDIR = $(PREFIX)/share/man
VERSION = 0.1.0

CC ?= cc
B ?= build
OPT ?= -O2 -g
# Sanitizer builds go to their own tree so the two never mix objects.
SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# Build dependencies are checked (and installed as root) by the `deps` target,
# which every object waits for; pkg-config runs only when a flag is first
# used (after deps), once per make. Parsing the Makefile installs nothing.
pkgconf = $(eval $(1) := $(shell pkg-config $(2)))$($(1))
UV_CFLAGS = $(call pkgconf,UV_CFLAGS,--cflags libuv)
UV_LIBS = $(call pkgconf,UV_LIBS,--libs libuv)
JANSSON_CFLAGS = $(call pkgconf,JANSSON_CFLAGS,--cflags jansson)
JANSSON_LIBS = $(call pkgconf,JANSSON_LIBS,--libs jansson)
CHECK_CFLAGS = $(call pkgconf,CHECK_CFLAGS,--cflags check)
CHECK_LIBS = $(call pkgconf,CHECK_LIBS,--libs check)

WARN = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla
BASE_CFLAGS = -std=c17 -D_GNU_SOURCE -DZKN_VERSION='"$(VERSION)"' $(WARN) $(OPT) -fPIC \
	-fvisibility=hidden -Iproto -Iclient/include -pthread $(EXTRA_CFLAGS)
LDFLAGS_ALL = -pthread $(EXTRA_LDFLAGS)

PROTO_SRC = $(wildcard proto/*.c)
DAEMON_SRC = $(wildcard daemon/*.c)
CTL_SRC = $(wildcard ctl/*.c)
CLIENT_SRC = $(wildcard client/*.c)
TEST_SRC = $(wildcard tests/test_*.c)
TEST_HELPER_SRC = $(filter-out $(TEST_SRC),$(wildcard tests/*.c))

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))
PROTO_OBJ = $(call obj,$(PROTO_SRC))
DAEMON_OBJ = $(call obj,$(DAEMON_SRC))
CTL_OBJ = $(call obj,$(CTL_SRC))
CLIENT_OBJ = $(call obj,$(CLIENT_SRC))
TEST_HELPER_OBJ = $(call obj,$(TEST_HELPER_SRC))
TEST_BIN = $(patsubst tests/%.c,$(B)/tests/%,$(TEST_SRC))

DAEMON = $(B)/zknallocd
# The daemon but main.o, for zknallocd and for suites that test its parts.
ZKND_LIB = $(B)/libzknd.a
ZKND_LIB_OBJ = $(filter-out $(B)/obj/daemon/main.o,$(DAEMON_OBJ))
DAEMON_PART_TESTS = $(B)/tests/test_sdnotify
CTL = $(B)/zknallocctl
LIB_SO = $(B)/libzknalloc.so
LIB_A = $(B)/libzknalloc.a

.PHONY: all deps run test sanitize install clean bench bench-quick bench-scale demo check-tests
all: $(DAEMON) $(CTL) $(LIB_SO) $(LIB_A)

deps:
	@build-aux/ensure-deps.sh

$(B)/obj/daemon/%.o: CFLAGS_EXTRA = $(UV_CFLAGS) $(JANSSON_CFLAGS) -Idaemon
$(B)/obj/ctl/%.o: CFLAGS_EXTRA = $(JANSSON_CFLAGS)
$(B)/obj/tests/%.o: CFLAGS_EXTRA = $(CHECK_CFLAGS) $(JANSSON_CFLAGS) -Itests -Iclient
$(B)/obj/client/%.o: CFLAGS_EXTRA = -Iclient $(CLIENT_CFLAGS)
$(patsubst $(B)/tests/%,$(B)/obj/tests/%.o,$(DAEMON_PART_TESTS)): CFLAGS_EXTRA = \
	$(CHECK_CFLAGS) $(JANSSON_CFLAGS) $(UV_CFLAGS) -Itests -Iclient -Idaemon

$(B)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS_EXTRA) -MMD -MP -c $< -o $@

$(ZKND_LIB): $(ZKND_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(DAEMON): $(B)/obj/daemon/main.o $(ZKND_LIB) $(PROTO_OBJ)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(UV_LIBS) $(JANSSON_LIBS)

$(CTL): $(CTL_OBJ) $(PROTO_OBJ)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(JANSSON_LIBS)

$(LIB_SO): $(CLIENT_OBJ) $(PROTO_OBJ)
	$(CC) $(LDFLAGS_ALL) -shared -Wl,-soname,libzknalloc.so.0 -o $@ $^
	@ln -sf libzknalloc.so $(B)/libzknalloc.so.0 # what programs linked with -lzknalloc look for

# One prelinked object, so that linking the archive brings in all of it: a
# program references only malloc and zkn_*, and archive members nothing
# references would be left out with their constructors and destructors (the
# stats report, its signal). Hidden symbols stay hidden in the program.
$(LIB_A): $(CLIENT_OBJ) $(PROTO_OBJ)
	@rm -f $@
	$(CC) -r -nostdlib -o $(B)/obj/libzknalloc-all.o $^
	ar rcs $@ $(B)/obj/libzknalloc-all.o

# Client tests link the library they test; the others use the wire code only.
# (The library's own copy of proto/ is hidden, so the harness links its own.)
$(B)/tests/test_client%: $(B)/obj/tests/test_client%.o $(TEST_HELPER_OBJ) $(PROTO_OBJ) $(LIB_SO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(TEST_HELPER_OBJ) $(PROTO_OBJ) -L$(B) -lzknalloc -Wl,-rpath,'$$ORIGIN/..' $(CHECK_LIBS) $(JANSSON_LIBS)

$(B)/tests/%: $(B)/obj/tests/%.o $(TEST_HELPER_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(CHECK_LIBS) $(JANSSON_LIBS)

# Suites of daemon parts link the daemon's library, libuv and jansson.
$(DAEMON_PART_TESTS): $(B)/tests/%: $(B)/obj/tests/%.o $(TEST_HELPER_OBJ) $(ZKND_LIB) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(CHECK_LIBS) $(UV_LIBS) $(JANSSON_LIBS)

# A stand-in allocator preloaded after the library, and a program run under
# both (test_client_preload's next-allocator test). Built like the live
# holder: plain, never sanitized (they run only where the drop-in exists).
NEXT_ALLOC_FAKE = $(B)/tests/libzkn-fake-next.so
NEXT_ALLOC_USER = $(B)/tests/zkn-next-user

$(NEXT_ALLOC_FAKE): tests/next-alloc/fake_alloc.c
	@mkdir -p $(dir $@)
	$(CC) -std=c17 -D_GNU_SOURCE $(WARN) $(OPT) -fPIC -shared -pthread -o $@ $<

$(NEXT_ALLOC_USER): tests/next-alloc/next_user.c
	@mkdir -p $(dir $@)
	$(CC) -std=c17 -D_GNU_SOURCE $(WARN) $(OPT) -o $@ $<

# Prints whether glibc trims its heap before and after a big free
# (test_client_preload: the same with the library as without it).
TRIM_USER = $(B)/tests/zkn-trim-user

$(TRIM_USER): tests/next-alloc/trim_user.c
	@mkdir -p $(dir $@)
	$(CC) -std=c17 -D_GNU_SOURCE $(WARN) $(OPT) -o $@ $<

# The same program with the static library linked in instead of preloaded.
ARCHIVE_USER = $(B)/tests/zkn-archive-user

$(ARCHIVE_USER): tests/next-alloc/next_user.c $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) -std=c17 -D_GNU_SOURCE $(WARN) $(OPT) $(LDFLAGS_ALL) -o $@ $^

check-tests: all $(TEST_BIN) $(NEXT_ALLOC_FAKE) $(NEXT_ALLOC_USER) $(ARCHIVE_USER) $(TRIM_USER)

# Every suite runs against the binaries of the same build tree.
test: check-tests
	@ZKN_BUILD_DIR=$(abspath $(B)) build-aux/run-tests.sh $(TEST_BIN)

# The live systemd suite (root; boots systemd in private namespaces and skips
# where it cannot): see docs/systemd.md, "Testing the units live".
.PHONY: test-systemd
test-systemd: all $(B)/tests/zkn-live-holder
	@tests/systemd-live/run.sh $(abspath $(B))

$(B)/tests/zkn-live-holder: tests/systemd-live/holder.c
	@mkdir -p $(dir $@)
	$(CC) -std=c17 -D_GNU_SOURCE $(WARN) $(OPT) -o $@ $<

# The drop-in malloc replacement cannot coexist with ASan's own malloc, so the
# sanitized client exports only the zkn_* API (ZKN_NO_DROPIN).
# Sanitized code runs several times slower: check's per-test timeouts scale.
sanitize:
	CK_TIMEOUT_MULTIPLIER=3 $(MAKE) B=build-san OPT='-O1 -g' EXTRA_CFLAGS='$(SAN_FLAGS)' EXTRA_LDFLAGS='$(SAN_FLAGS)' \
		CLIENT_CFLAGS=-DZKN_NO_DROPIN test

run: all
	exec ./$(DAEMON) $(ARGS)

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 0755 $(DAEMON) $(DESTDIR)$(SBINDIR)/zknallocd
	install -m 0755 $(CTL) $(DESTDIR)$(BINDIR)/zknallocctl
	install -m 0755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/libzknalloc.so.0
	ln -sf libzknalloc.so.0 $(DESTDIR)$(LIBDIR)/libzknalloc.so
	install -m 0644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libzknalloc.a
	install -m 0644 client/include/zknalloc.h $(DESTDIR)$(INCLUDEDIR)/zknalloc.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
		-e 's|@VERSION@|$(VERSION)|g' build-aux/zknalloc.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/zknalloc.pc
	@if [ -d man ] && ls man/*.[0-9] >/dev/null 2>&1; then \
		for m in man/*.[0-9]; do s=$${m##*.}; install -d $(DESTDIR)$(MANDIR)/man$$s; \
		install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done; fi
	@if [ -f systemd/install.mk ]; then $(MAKE) -f systemd/install.mk DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' SBINDIR='$(SBINDIR)'; fi

clean:
	rm -rf build build-san

-include $(wildcard bench/bench.mk)
-include $(shell find $(B) -name '*.d' 2>/dev/null)
