#!/usr/bin/env bash
# Set up, ingest the demo catalog into the embedded store, and search it by words, by photo and both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${SNAPSHOP_STORE__PATH:-}" ]; then
  export SNAPSHOP_STORE__PATH=var/demo-store
  # The demo's own stores are disposable: one an earlier model version made (refused as another
  # model's vectors) is rebuilt, the grocery one too (it stopped this script at the grocery ingest
  # after the change to model version 6). A store path you set yourself is never removed.
  for store in "$SNAPSHOP_STORE__PATH" "$SNAPSHOP_STORE__PATH-grocery"; do
    if [ -d "$store" ] && ! .venv/bin/snapshop search --text demo --k 1 --store "$store" >/dev/null 2>&1; then
      echo "rebuilding $store (made by another model version)"
      rm -rf "$store"
    fi
  done
fi
run() { echo; echo "\$ snapshop $*"; .venv/bin/snapshop "$@"; }
run ingest demo/catalog.csv
run search --text "red floral summer dress" --k 5
run search --image demo/queries/handbag.jpg --k 5
run search --image demo/queries/handbag.jpg --text "in brown" --k 5
run search --text "black analog watch" --category Watches --max-price 30 --k 5 --explain
# A real shopper's phone photo of a milk carton on a supermarket shelf, against 38 grocery products.
run ingest demo/grocery/catalog.csv --store "$SNAPSHOP_STORE__PATH-grocery"
run search --image demo/grocery/queries/milk.jpg --store "$SNAPSHOP_STORE__PATH-grocery" --k 3 --explain
echo
echo "Next: .venv/bin/snapshop serve --store $SNAPSHOP_STORE__PATH   and open http://127.0.0.1:8000/"
