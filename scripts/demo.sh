#!/usr/bin/env bash
# Set up, ingest the demo catalog into the embedded store, and run three searches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SNAPSHOP_STORE__PATH=${SNAPSHOP_STORE__PATH:-var/demo-store}
run() { echo; echo "\$ snapshop $*"; .venv/bin/snapshop "$@"; }
run ingest demo/catalog.csv
run search --text "red floral summer dress" --k 5
run search --image demo/images/$(sed -n 's/.*images\/\([0-9]*\.jpg\).*Handbags.*/\1/p' demo/catalog.csv | head -1) --k 5
run search --text "black analog watch" --category Watches --max-price 5000 --k 5
