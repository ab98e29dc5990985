# shellcheck shell=bash
# Shared by scripts/demo and scripts/test (sourced, never run). Defines the build dependencies in
# one place and installs the missing ones with apt on Debian/Ubuntu.

# Debian 12 packages needed to build and test flock. python3 is only used by the benchmarks,
# clang-14 (Debian 12's own Clang) only by scripts/test's build-clang/ pass. Open MPI is for
# flock::mpi (its tests and example are skipped where it is missing).
FLOCK_APT_PACKAGES=(cmake g++ ninja-build catch2 libfmt-dev libsqlite3-dev libpq-dev postgresql pkg-config
  python3 clang-14 libopenmpi-dev openmpi-bin)

# The repository root (the parent of this scripts/ directory), whatever the caller's cwd.
# shellcheck disable=SC2034 # used by the scripts that source this file
FLOCK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

flock_log() { printf '==> %s\n' "$*"; }
flock_die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# True when the Debian package is installed (not merely known, removed or half-configured).
flock_pkg_installed() {
  dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

# Install the packages of FLOCK_APT_PACKAGES that are missing: nothing happens, and no root is
# needed, when they are all there. apt-get update runs once, only when something is missing.
flock_install_deps() {
  command -v dpkg >/dev/null 2>&1 || {
    flock_log "dpkg not found: not a Debian system; make sure these are installed: ${FLOCK_APT_PACKAGES[*]}"
    return 0
  }
  local missing=() pkg
  for pkg in "${FLOCK_APT_PACKAGES[@]}"; do
    flock_pkg_installed "$pkg" || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0

  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 ||
      flock_die "missing packages (${missing[*]}) and not root, and sudo is not installed"
    sudo=(sudo)
  fi
  flock_log "installing missing packages: ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
}

# Parallel build jobs: FLOCK_JOBS if set, else the number of online CPUs.
flock_jobs() { printf '%s\n' "${FLOCK_JOBS:-$(nproc 2>/dev/null || echo 2)}"; }
