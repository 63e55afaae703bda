#!/usr/bin/env bash
# Builds the user guide (docs/, an mdBook) and checks it: every internal
# link and #anchor resolves, and every key of every plug-in's configuration
# section appears in its chapter. Known gaps: scripts/guide-missing-keys.txt.
#
#   bash scripts/check-guide.sh            build and check
#   bash scripts/check-guide.sh --list     also print every key checked
#
# mdbook comes from $MAMEY_TOOLS/bin (default ~/.cache/mamey-tools/bin),
# where `bash scripts/services.sh tools` installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${MAMEY_TOOLS:-$HOME/.cache/mamey-tools}"
if [ ! -x "$TOOLS/bin/mdbook" ] && ! command -v mdbook >/dev/null; then
  echo "guide: no mdbook; installing it with scripts/services.sh tools"
  bash scripts/services.sh tools
fi
exec python3 scripts/check_guide.py "$@"
