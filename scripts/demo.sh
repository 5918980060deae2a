#!/usr/bin/env bash
# Runs the broker with its embedded durable log (deploy/switchyard.yaml,
# deploy/rules.yaml) and shows events flowing through the order saga:
# order_publisher places orders → rules route them → payment_service
# consumes, acks and publishes payment outcomes → the order-service
# subscription receives them. The broker keeps running afterwards; try the
# CLI against it, and stop it with Ctrl-C. DEMO_EXIT=1 stops after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
port="${SWITCHYARD_DEMO_PORT:-50051}"
export SWITCHYARD_URL="http://127.0.0.1:$port"
data="$(mktemp -d)/data"

echo "== building (first time: a few minutes)"
cargo build -q -p switchyard-broker -p switchyard-examples --bins
bin="$CARGO_TARGET_DIR/debug"

echo "== starting the broker on 127.0.0.1:$port, data in $data (logs: $data.log)"
"$bin/switchyard" serve --config deploy/switchyard.yaml --listen "127.0.0.1:$port" --data-dir "$data" 2>"$data.log" &
broker=$!
trap 'kill "$broker" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  "$bin/switchyard" topics list >/dev/null 2>&1 && break
  kill -0 "$broker" 2>/dev/null || { cat "$data.log"; exit 1; }
  sleep 0.1
done
"$bin/switchyard" topics list

echo "== payment_service subscribes; order_publisher places 10 orders"
"$bin/payment_service" --count 10 &
payments=$!
"$bin/order_publisher" --orders 10
wait "$payments"

echo "== the order-service subscription receives the payment outcomes"
"$bin/switchyard" tail order-service --count 10 | python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    e = d["event"]
    print("order-service: got %s for %s (%s/%s@%s, rules %s)"
          % (e["type"], e["data"]["orderId"], d["topic"], d["partition"], d["offset"], d["rules"]))
'

echo "== progress of the payment-service subscription"
sleep 0.3 # let the last acks reach the 100 ms offset flush
"$bin/switchyard" subscriptions describe payment-service

if [ "${DEMO_EXIT:-0}" = 1 ]; then
  exit 0
fi
echo "== broker running at $SWITCHYARD_URL; try: $bin/switchyard --help   (Ctrl-C stops it)"
wait "$broker"
