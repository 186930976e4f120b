# Shared helpers for the installer build scripts. Source it; do not run it.
# shellcheck shell=bash

# The repository root (installer/..).
HOLDFAST_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HOLDFAST_ROOT

die() {
  echo "error: $*" >&2
  exit 1
}

note() {
  echo "==> $*" >&2
}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (see installer/README.md for what to install)"
  done
}

# The version of a workspace package, e.g. `package_version holdfast-agent`.
# Every package takes the workspace version, so this is the product version.
package_version() {
  cargo metadata --no-deps --format-version 1 --manifest-path "$HOLDFAST_ROOT/Cargo.toml" |
    python3 -c 'import json, sys
name = sys.argv[1]
print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == name))' "$1"
}

# The cargo target directory (CARGO_TARGET_DIR wins, as it does for cargo).
target_dir() {
  echo "${CARGO_TARGET_DIR:-$HOLDFAST_ROOT/target}"
}
