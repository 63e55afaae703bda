#!/usr/bin/env bash
# Renders the cargo-generate templates and checks what comes out against
# this checkout's crates (mamey_path = the repository root).
#
# Three services and the system are built, tested and linted (`full`):
#
#   minimal   templates/service, every answer `none`
#   sqlite    in-process broker, SQLite, file secrets, static discovery
#   servers   RabbitMQ, Postgres, Vault, etcd discovery, gRPC
#   system    templates/system: the gateway and one service; its test runs
#             both in one process and calls through the gateway
#
# The other answers are linted only (`cargo clippy --all-targets`, which
# type-checks every target without building it), each at least once:
#
#   with-redis       in-process broker, Redis, static discovery, gRPC
#   with-redis-etcd  no broker, Redis, file secrets, etcd discovery
#   with-mongo       RabbitMQ, MongoDB, Consul discovery
#   with-mongo-grpc  no broker, MongoDB, Vault, gRPC
#   pair-M-D         the other messaging x SQL-database pairs (a pool
#                    without an outbox, each database behind each broker),
#                    the secrets backends spread over them
#
# and on each `cargo fmt --check` and a parse of its TOML and YAML files
# (not Kubernetes' schema: that needs a cluster). The tests of crates with
# Postgres, RabbitMQ, Redis, Vault or etcd need those servers on loopback
# (scripts/services.sh up; up etcd; up openbao); without them they print
# SKIPPED, or fail with MAMEY_REQUIRE_SERVICES=1. MongoDB and Consul are
# compile-checked only: no such server runs here or in CI (their tests
# run when MONGODB_URI / CONSUL_HTTP_ADDR name one). Vault's token:
# $VAULT_TOKEN, default the one scripts/services.sh gives OpenBao.
#
#   bash scripts/check-templates.sh
#
# The crates are rendered outside the repository, in
# $MAMEY_TEMPLATES_DIR (default ${TMPDIR:-/tmp}/mamey-templates), and built
# in one target dir, $CARGO_TARGET_DIR/templates, so they share their
# dependencies' builds. A file is only rewritten when its content changed,
# so a second run rebuilds nothing that did not change. cargo-generate
# comes from $MAMEY_TOOLS/bin, protoc (etcd-client's build) from the PATH
# or $PROTOC: scripts/services.sh tools installs both.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
TOOLS="${MAMEY_TOOLS:-$HOME/.cache/mamey-tools}"
export PATH="$TOOLS/bin:$PATH"
if ! command -v cargo-generate >/dev/null \
  || { [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null; }; then
  echo "templates: no cargo-generate or protoc; installing them with scripts/services.sh tools"
  bash scripts/services.sh tools
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamey-target}/templates"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# No debug info and no incremental state: the rendered crates are built
# to be checked, not debugged: the dir stays a few GB, not twice that.
export CARGO_PROFILE_DEV_DEBUG=false CARGO_INCREMENTAL=0
out="${MAMEY_TEMPLATES_DIR:-${TMPDIR:-/tmp}/mamey-templates}"
mkdir -p "$out"
# One run at a time renders into $out.
exec 9>"$out/.lock"
flock 9

started=$SECONDS
say() { echo "templates: $* ($((SECONDS - started)) s)"; }

# render TEMPLATE NAME KEY=VALUE...: renders templates/TEMPLATE as $out/NAME.
render() {
  local template=$1 name=$2; shift 2
  local defines=(--define "mamey_path=$root")
  for kv in "$@"; do defines+=(--define "$kv"); done
  local fresh="$out/.fresh"
  rm -rf "$fresh" && mkdir -p "$fresh"
  cargo generate --path "$root/templates/$template" --name "$name" --silent --vcs none \
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

# service NAME KEY=VALUE...: templates/service as $out/NAME; the answers
# not given are `none`.
service() {
  local name=$1; shift
  local -A answers=([http_port]=8080 [messaging]=none [persistence]=none [secrets]=none
                    [discovery]=none [grpc]=false)
  for kv in "$@"; do answers[${kv%%=*}]=${kv#*=}; done
  local defines=()
  for key in "${!answers[@]}"; do defines+=("$key=${answers[$key]}"); done
  render service "$name" "${defines[@]}"
}

fail() { echo "templates: $1: $2 failed (in $out/$1)" >&2; exit 1; }

# check NAME full|lint: in $out/NAME, fmt, the TOML and YAML files, then
# `full`: build, test and clippy; `lint`: clippy. A crate with Vault logs
# in with $VAULT_TOKEN, default the token scripts/services.sh gives OpenBao.
check() {
  local name=$1 what=$2
  cd "$out/$name"
  if grep -qs '^backend = "vault"' config/default.toml; then
    export MAMEY__SECRETS__VAULT__AUTH__TOKEN="${VAULT_TOKEN:-mamey-dev-root}"
  else
    unset MAMEY__SECRETS__VAULT__AUTH__TOKEN
  fi
  cargo fmt --all --check || fail "$name" "cargo fmt --check"
  python3 - <<'PY' || fail "$name" "parsing the TOML and YAML files"
import pathlib, tomllib
here = pathlib.Path(".")
for path in [*here.glob("Cargo.toml"), *here.glob("*/Cargo.toml"), *here.glob("config/*.toml")]:
    tomllib.loads(path.read_text())
try:
    import yaml
except ImportError:
    yaml = None
manifest = here / "deploy" / "kubernetes.yaml"
if yaml and manifest.exists():
    kinds = [d["kind"] for d in yaml.safe_load_all(manifest.open())]
    assert kinds == ["Deployment", "Service"], kinds
PY
  local clippy=(cargo clippy --workspace --all-targets --quiet -- -D warnings)
  case "$what" in
    full)
      cargo build --workspace --all-targets --quiet || fail "$name" "cargo build"
      cargo test --workspace --quiet || fail "$name" "cargo test"
      "${clippy[@]}" || fail "$name" "cargo clippy"
      say "$name: fmt, files, build, test, clippy" ;;
    lint)
      "${clippy[@]}" || fail "$name" "cargo clippy"
      say "$name: fmt, files, clippy" ;;
  esac
  cd "$root"
}

say "rendering into $out"
service minimal
check minimal full

service sqlite messaging=in-process persistence=sqlite secrets=file discovery=static
check sqlite full

service servers messaging=rabbitmq persistence=postgres secrets=vault discovery=etcd grpc=true
check servers full

render system system
check system full

# The answers the builds above do not take, linted.
service with-redis messaging=in-process persistence=redis discovery=static grpc=true
check with-redis lint
service with-redis-etcd persistence=redis secrets=file discovery=etcd
check with-redis-etcd lint
service with-mongo messaging=rabbitmq persistence=mongo discovery=consul
check with-mongo lint
service with-mongo-grpc persistence=mongo secrets=vault grpc=true
check with-mongo-grpc lint
for answers in none:sqlite:none none:postgres:file in-process:none:vault \
               in-process:postgres:none rabbitmq:none:file rabbitmq:sqlite:vault; do
  IFS=: read -r messaging persistence secrets <<<"$answers"
  name="pair-$messaging-$persistence"
  service "$name" "messaging=$messaging" "persistence=$persistence" "secrets=$secrets"
  check "$name" lint
done
say "done"
