#!/usr/bin/env bash
# Makes sure the Debian packages the build needs are present: installs them
# when run as root, otherwise prints the exact command and fails.
set -u
need=()
pkg-config --version >/dev/null 2>&1 || need+=(pkg-config)
if command -v pkg-config >/dev/null 2>&1; then
    pkg-config --exists libuv || need+=(libuv1-dev)
    pkg-config --exists jansson || need+=(libjansson-dev)
    pkg-config --exists check || need+=(check)
else
    need+=(libuv1-dev libjansson-dev check)
fi
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-deps: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 && exit 0
    echo "ensure-deps: apt-get failed" >&2
    exit 1
fi
echo "ensure-deps: missing packages. Run:" >&2
echo "    sudo apt-get install -y ${need[*]}" >&2
exit 1
