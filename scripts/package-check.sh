#!/usr/bin/env bash
# Packages every publishable crate as `cargo publish` would, without
# uploading anything.
#
#   scripts/package-check.sh              metadata, file lists, then a build of each tarball
#   scripts/package-check.sh --no-verify  metadata and file lists only (seconds)
#
# 1. The manifest fields crates.io and docs.rs want (description, license,
#    repository, documentation, readme, 1-5 keywords, 1-5 categories,
#    [package.metadata.docs.rs]) are present in every publishable crate.
# 2. `cargo package --no-verify`: manifests (every path dependency carries a
#    version; path-only dev-dependencies are dropped) and file lists. Any
#    warning here fails the check.
# 3. `cargo package`: each crate is built from its tarball, in dependency
#    order, against the tarballs of the workspace crates it depends on
#    (cargo's local overlay registry, so unpublished crates resolve). Default
#    features, as `cargo publish` verifies. About 40 s with a warm target
#    dir, under 4 min cold.
#
# The publishable crates are the members without `publish = false`: the
# examples are left out, `cargo package --workspace` would try them too.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamey-target}"
verify=1
case "${1:-}" in
  "") ;;
  --no-verify) verify=0 ;;
  *) echo "usage: $0 [--no-verify]" >&2; exit 2 ;;
esac

metadata=$(cargo metadata --no-deps --format-version 1 --locked)

# 1. Manifest fields. Prints the publishable crates' names.
check_manifests=$(cat <<'EOF'
import json, sys
problems, names = [], []
for p in json.load(sys.stdin)["packages"]:
    if p["publish"] is not None:  # publish = false (or a private registry)
        continue
    name = p["name"]
    names.append(name)
    def need(ok, what):
        if not ok:
            problems.append(f"{name}: {what}")
    for field in ("description", "license", "repository", "documentation", "readme", "rust_version"):
        need(p.get(field), f"no `{field}`")
    keywords, categories = p["keywords"], p["categories"]
    need(1 <= len(keywords) <= 5, f"{len(keywords)} keywords (crates.io takes 1-5)")
    need(all(len(k) <= 20 for k in keywords), "a keyword over 20 characters")
    need(1 <= len(categories) <= 5, f"{len(categories)} categories (crates.io takes 1-5)")
    need(((p.get("metadata") or {}).get("docs") or {}).get("rs"), "no [package.metadata.docs.rs]")
for line in problems:
    print("package-check:", line, file=sys.stderr)
if problems or not names:
    sys.exit(1)
print(" ".join(names))
EOF
)
crates=$(python3 -c "$check_manifests" <<<"$metadata")
echo "package-check: publishable crates: $crates"

args=()
for crate in $crates; do args+=(-p "$crate"); done

# 2. Manifests and file lists.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo package --no-verify --locked --allow-dirty "${args[@]}" 2>&1 | tee "$log"
if grep -q '^warning' "$log"; then
  echo "package-check: cargo package warned (above); fix the manifest" >&2
  exit 1
fi

# 3. A build of each tarball.
if [ "$verify" = 1 ]; then
  cargo package --locked --allow-dirty "${args[@]}"
fi
echo "package-check: ok"
