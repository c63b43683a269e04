#!/usr/bin/env bash
# A curl session against a running ktape (make demo): discover a market, read its book
# now and a minute ago, page through its recent changes and trades, get candles.
#   BASE=http://127.0.0.1:8080 KTAPE_KEY=kt_... bash examples/curl_session.sh
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8080}
: "${KTAPE_KEY:?set KTAPE_KEY to your API key (make demo prints one)}"
AUTH=(-H "Authorization: Bearer $KTAPE_KEY")
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "== health"; curl -fsS "$BASE/healthz" >/dev/null && echo ok
ticker=$(curl -fsS "${AUTH[@]}" "$BASE/v1/markets?page_size=1&status=active" | json "d['markets'][0]['ticker']")
echo "== market $ticker"
curl -fsS "${AUTH[@]}" "$BASE/v1/markets/$ticker" | json "d['market']['coverage']"
echo "== book now (top 3)"
curl -fsS "${AUTH[@]}" "$BASE/v1/markets/$ticker/orderbook?depth=3"; echo
now=$(date -u +%Y-%m-%dT%H:%M:%SZ); ago=$(date -u -d '-1 min' +%Y-%m-%dT%H:%M:%SZ)
echo "== book a minute ago"
curl -fsS "${AUTH[@]}" "$BASE/v1/markets/$ticker/orderbook?depth=3&at=$ago" | json "d['continuity']"
echo "== changes in the last minute, 5 per page, two pages"
page=$(curl -fsS "${AUTH[@]}" "$BASE/v1/markets/$ticker/deltas?start_time=$ago&end_time=$now&page_size=5")
echo "$page" | json "[(x['kind'], x['price'], x['quantity']) for x in d['deltas']]"
token=$(echo "$page" | json "d['next_page_token']")
if [ -n "$token" ]; then
  curl -fsS "${AUTH[@]}" -G "$BASE/v1/markets/$ticker/deltas" --data-urlencode "start_time=$ago" \
    --data-urlencode "end_time=$now" --data-urlencode "page_size=5" \
    --data-urlencode "page_token=$token" | json "[(x['kind'], x['price'], x['quantity']) for x in d['deltas']]"
fi
echo "== trades and 1m candles"
curl -fsS "${AUTH[@]}" "$BASE/v1/markets/$ticker/trades?start_time=$ago&end_time=$now&page_size=3" | json "len(d['trades'])"
curl -fsS "${AUTH[@]}" "$BASE/v1/markets/$ticker/candles?start_time=$ago&end_time=$now&interval=1m" | json "d['candles']"
echo "== an error is JSON"
curl -sS "${AUTH[@]}" "$BASE/v1/markets/NO-SUCH-TICKER/orderbook"; echo
echo "== without a key"
curl -sS "$BASE/v1/markets/NO-SUCH-TICKER/orderbook"; echo
