#!/usr/bin/env bash
# The Debian packages and tools the test suite drives for real. One list, used by `make test` and
# `.ci/run`: as root on Debian the missing packages are installed; otherwise the missing tools are
# named and the script fails, so a suite that needs them never runs half-equipped.
#
#   scripts/install-system-deps.sh          install (root) or check
#   scripts/install-system-deps.sh --check  only check, never install
# The list: scripts/debian-packages.txt.
set -euo pipefail

# Debian package -> a command it provides: one list, in scripts/debian-packages.txt.
DEB_PACKAGES=()
while read -r pkg cmd _; do
    case "$pkg" in "" | "#"*) continue ;; esac
    DEB_PACKAGES+=("$pkg:${cmd#-}")
done <"$(dirname "$0")/debian-packages.txt"

# Tools in sbin directories are found even when a non-root PATH lacks them.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing_packages=()
missing_tools=()
for item in "${DEB_PACKAGES[@]}"; do
    pkg="${item%%:*}"
    cmd="${item#*:}"
    if [ -n "$cmd" ]; then
        command -v "$cmd" >/dev/null 2>&1 && continue
        missing_tools+=("$cmd (Debian package $pkg)")
    elif ! command -v dpkg-query >/dev/null 2>&1; then
        continue  # not Debian: packages without a command cannot be checked here
    elif dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        continue
    else
        missing_tools+=("package $pkg")
    fi
    missing_packages+=("$pkg")
done

[ ${#missing_packages[@]} -eq 0 ] && exit 0

if [ "${1:-}" != "--check" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing_packages[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq -o DPkg::Lock::Timeout=600
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing_packages[@]}"
    exec "$0" --check
fi

echo "The test suite needs tools that are not installed:" >&2
printf '  %s\n' "${missing_tools[@]}" >&2
echo "Install them as root with: $0" >&2
echo "  (or: apt-get install ${missing_packages[*]})" >&2
exit 1
