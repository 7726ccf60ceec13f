# Installs zk-nalloc's systemd units and snippets. Called by the top Makefile's
# `install` target:
#   $(MAKE) -f systemd/install.mk DESTDIR=... PREFIX=... SBINDIR=...
# Every directory below can be overridden, e.g. for a distribution package:
#   SYSTEMDUNITDIR=/usr/lib/systemd/system SYSUSERSDIR=/usr/lib/sysusers.d
# The units' ExecStart is rewritten to $(SBINDIR)/zknallocd; DESTDIR never
# appears inside an installed file.
PREFIX ?= /usr/local
DESTDIR ?=
SBINDIR ?= $(PREFIX)/sbin
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSTEMDUSERUNITDIR ?= $(PREFIX)/lib/systemd/user
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
# The THP snippet is opt-in: installed where tmpfiles.d does not read it.
DATADIR ?= $(PREFIX)/share/zknalloc
DOCDIR ?= $(PREFIX)/share/doc/zknalloc

SRC := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
TOP := $(SRC)/..
SUBST = sed -e 's|/usr/local/sbin/zknallocd|$(SBINDIR)/zknallocd|g'

.PHONY: install-systemd uninstall-systemd
install-systemd:
	@case '$(SBINDIR)' in /*) ;; *) echo "install.mk: SBINDIR must be absolute: '$(SBINDIR)'" >&2; exit 1;; esac
	install -d '$(DESTDIR)$(SYSTEMDUNITDIR)' '$(DESTDIR)$(SYSTEMDUSERUNITDIR)' \
		'$(DESTDIR)$(SYSUSERSDIR)' '$(DESTDIR)$(DATADIR)' '$(DESTDIR)$(DOCDIR)'
	$(SUBST) $(SRC)/zknallocd.service > '$(DESTDIR)$(SYSTEMDUNITDIR)/zknallocd.service'
	install -m 0644 $(SRC)/zknallocd.socket '$(DESTDIR)$(SYSTEMDUNITDIR)/zknallocd.socket'
	$(SUBST) $(SRC)/user/zknallocd.service > '$(DESTDIR)$(SYSTEMDUSERUNITDIR)/zknallocd.service'
	install -m 0644 $(SRC)/user/zknallocd.socket '$(DESTDIR)$(SYSTEMDUSERUNITDIR)/zknallocd.socket'
	chmod 0644 '$(DESTDIR)$(SYSTEMDUNITDIR)/zknallocd.service' \
		'$(DESTDIR)$(SYSTEMDUSERUNITDIR)/zknallocd.service'
	install -m 0644 $(SRC)/zknalloc.sysusers '$(DESTDIR)$(SYSUSERSDIR)/zknalloc.conf'
	install -m 0644 $(SRC)/zknalloc-thp.tmpfiles '$(DESTDIR)$(DATADIR)/zknalloc-thp.conf'
	@if [ -f $(TOP)/docs/systemd.md ]; then \
		echo "install -m 0644 docs/systemd.md $(DESTDIR)$(DOCDIR)/systemd.md"; \
		install -m 0644 $(TOP)/docs/systemd.md '$(DESTDIR)$(DOCDIR)/systemd.md'; fi

uninstall-systemd:
	rm -f '$(DESTDIR)$(SYSTEMDUNITDIR)/zknallocd.service' '$(DESTDIR)$(SYSTEMDUNITDIR)/zknallocd.socket' \
		'$(DESTDIR)$(SYSTEMDUSERUNITDIR)/zknallocd.service' '$(DESTDIR)$(SYSTEMDUSERUNITDIR)/zknallocd.socket' \
		'$(DESTDIR)$(SYSUSERSDIR)/zknalloc.conf' '$(DESTDIR)$(DATADIR)/zknalloc-thp.conf' \
		'$(DESTDIR)$(DOCDIR)/systemd.md'
