#!/usr/bin/env bash
# Makes sure the peer allocators and gnuplot the benchmarks compare against are
# installed: installs the missing Debian packages when run as root, otherwise
# prints the exact command. Never fails the build: missing peers are skipped.
set -u
need=()
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1" || ls /usr/lib/*/"$1"* >/dev/null 2>&1; }
have_lib libjemalloc.so.2 || need+=(libjemalloc2)
have_lib libmimalloc.so.2 || need+=(libmimalloc2.0)
have_lib libtcmalloc_minimal.so.4 || need+=(libtcmalloc-minimal4)
command -v gnuplot >/dev/null 2>&1 || need+=(gnuplot-nox)
command -v python3 >/dev/null 2>&1 || need+=(python3)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; }; then
        exit 0
    fi
    echo "bench: apt-get failed; the missing allocators will be skipped" >&2
    exit 0
fi
echo "bench: missing ${need[*]}; the benchmarks skip what is missing. To install:" >&2
echo "    sudo apt-get install -y ${need[*]}" >&2
exit 0
