#!/usr/bin/env bash
# Set up, ingest the demo catalog into the embedded store, and search it by words, by photo and both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SNAPSHOP_STORE__PATH=${SNAPSHOP_STORE__PATH:-var/demo-store}
run() { echo; echo "\$ snapshop $*"; .venv/bin/snapshop "$@"; }
run ingest demo/catalog.csv
run search --text "red floral summer dress" --k 5
run search --image demo/queries/handbag.jpg --k 5
run search --image demo/queries/handbag.jpg --text "in brown" --k 5
run search --text "black analog watch" --category Watches --max-price 30 --k 5 --explain
echo
echo "Next: .venv/bin/snapshop serve --store $SNAPSHOP_STORE__PATH   and open http://127.0.0.1:8000/"
