#!/usr/bin/env bash
# Renders templates/service with cargo-generate and checks what comes out
# against this checkout's crates (mamey_path = the repository root):
#
#   minimal     no messaging, no database, no secrets   build, test, clippy
#   sqlite      in-process broker, SQLite, file secrets  build, test, clippy
#   servers     RabbitMQ, Postgres, Vault                build, test, clippy
#   the six other messaging x database pairs, with        test, clippy
#   the secrets backends spread over them
#
# and on each `cargo fmt --check` and a parse of its TOML and YAML files
# (not Kubernetes' schema: that needs a cluster). The tests of crates with
# Postgres, RabbitMQ or Vault need those servers on loopback
# (scripts/services.sh up); without them they print SKIPPED, or fail with
# MAMEY_REQUIRE_SERVICES=1. Vault's token: $VAULT_TOKEN, default the one
# scripts/services.sh gives OpenBao.
#
#   bash scripts/check-templates.sh
#
# The crates are rendered outside the repository, in
# $MAMEY_TEMPLATES_DIR (default ${TMPDIR:-/tmp}/mamey-templates), and built
# in one target dir, $CARGO_TARGET_DIR/templates, so they share their
# dependencies' builds. A file is only rewritten when its content changed,
# so a second run rebuilds nothing that did not change. cargo-generate
# comes from $MAMEY_TOOLS/bin (scripts/services.sh tools).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
TOOLS="${MAMEY_TOOLS:-$HOME/.cache/mamey-tools}"
export PATH="$TOOLS/bin:$PATH"
if ! command -v cargo-generate >/dev/null; then
  echo "templates: no cargo-generate; installing it with scripts/services.sh tools"
  bash scripts/services.sh tools
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamey-target}/templates"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# No debug info and no incremental state: the rendered crates are built
# to be checked, not debugged: the dir takes about 3 GB, not twice that.
export CARGO_PROFILE_DEV_DEBUG=false CARGO_INCREMENTAL=0
out="${MAMEY_TEMPLATES_DIR:-${TMPDIR:-/tmp}/mamey-templates}"
mkdir -p "$out"
# One run at a time renders into $out.
exec 9>"$out/.lock"
flock 9

started=$SECONDS
say() { echo "templates: $* ($((SECONDS - started)) s)"; }

# render NAME KEY=VALUE...: renders templates/service as $out/NAME.
render() {
  local name=$1; shift
  local defines=(--define "mamey_path=$root" --define http_port=8080)
  for kv in "$@"; do defines+=(--define "$kv"); done
  local fresh="$out/.fresh"
  rm -rf "$fresh" && mkdir -p "$fresh"
  cargo generate --path "$root/templates/service" --name "$name" --silent --vcs none \
    --destination "$fresh" "${defines[@]}" >"$fresh.log" 2>&1 \
    || { cat "$fresh.log"; echo "templates: rendering $name failed" >&2; exit 1; }
  # The workspace's lock file: the same dependency versions as the
  # workspace, no index update, and builds shared with CI's.
  cp "$root/Cargo.lock" "$fresh/$name/"
  # Only what changed is written (checksums, not times), so cargo sees
  # an unchanged crate as fresh.
  rsync -rc --delete "$fresh/$name/" "$out/$name/"
  rm -rf "$fresh" "$fresh.log"
}

fail() { echo "templates: $1: $2 failed (in $out/$1)" >&2; exit 1; }

# check NAME build|test|clippy...: in $out/NAME, fmt, the TOML and YAML
# files, then each command named. A crate with Vault logs in with
# $VAULT_TOKEN, default the token scripts/services.sh gives OpenBao.
check() {
  local name=$1; shift
  cd "$out/$name"
  if grep -q '^backend = "vault"' config/default.toml; then
    export MAMEY__SECRETS__VAULT__AUTH__TOKEN="${VAULT_TOKEN:-mamey-dev-root}"
  else
    unset MAMEY__SECRETS__VAULT__AUTH__TOKEN
  fi
  cargo fmt --check || fail "$name" "cargo fmt --check"
  python3 - <<'PY' || fail "$name" "parsing the TOML and YAML files"
import pathlib, tomllib
for path in [pathlib.Path("Cargo.toml"), *pathlib.Path("config").glob("*.toml")]:
    tomllib.loads(path.read_text())
try:
    import yaml
except ImportError:
    yaml = None
if yaml:
    kinds = [d["kind"] for d in yaml.safe_load_all(open("deploy/kubernetes.yaml"))]
    assert kinds == ["Deployment", "Service"], kinds
PY
  for what in "$@"; do
    case "$what" in
      build) cargo build --all-targets --quiet || fail "$name" "cargo build" ;;
      test) cargo test --quiet || fail "$name" "cargo test" ;;
      clippy) cargo clippy --all-targets --quiet -- -D warnings || fail "$name" "cargo clippy" ;;
    esac
  done
  cd "$root"
  say "$name: fmt, files, $*"
}

say "rendering into $out"
render minimal messaging=none persistence=none secrets=none
check minimal build test clippy

render sqlite messaging=in-process persistence=sqlite secrets=file
check sqlite build test clippy

render servers messaging=rabbitmq persistence=postgres secrets=vault
check servers build test clippy

# The code paths the three above do not take: an in-memory store with a
# broker, a pool without an outbox, each database behind each broker, and
# the secrets backends beside other choices.
for answers in none:sqlite:none none:postgres:file in-process:none:vault \
               in-process:postgres:none rabbitmq:none:file rabbitmq:sqlite:vault; do
  IFS=: read -r messaging persistence secrets <<<"$answers"
  name="pair-$messaging-$persistence"
  render "$name" "messaging=$messaging" "persistence=$persistence" "secrets=$secrets"
  check "$name" test clippy
done
say "done"
