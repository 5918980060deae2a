#!/usr/bin/env bash
# One command for the order saga: builds, starts a broker with this
# folder's config and rules (embedded log, fresh data dir), starts the
# inventory, payment and shipping services, places orders through the
# order service, and shows how each saga ended, the dead letter, and the
# subscriptions' progress.
#
#   examples/order-saga/run.sh               # 10 orders, then stop
#   ORDERS=20 KEEP_RUNNING=1 examples/order-saga/run.sh
#   SWITCHYARD_URL=http://127.0.0.1:50051 examples/order-saga/run.sh
#                                            # use a running broker (e.g. deploy/docker-compose.yml)
#
# With OTEL_EXPORTER_OTLP_ENDPOINT set (e.g. http://127.0.0.1:4317 with
# deploy/docker-compose.yml up), broker and services export their spans:
# open Jaeger at http://127.0.0.1:16686 and pick an order's trace.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
port="${SWITCHYARD_DEMO_PORT:-50051}"
metrics_port="${SWITCHYARD_DEMO_METRICS_PORT:-9464}"
work="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

echo "== building (first time: a few minutes)"
cargo build -q -p switchyard-broker -p switchyard-examples --bins
bin="$CARGO_TARGET_DIR/debug"

if [ -n "${SWITCHYARD_URL:-}" ]; then
  echo "== using the broker at $SWITCHYARD_URL (started with examples/order-saga/switchyard.yaml)"
else
  export SWITCHYARD_URL="http://127.0.0.1:$port"
  echo "== broker on $SWITCHYARD_URL, metrics on :$metrics_port, data and logs in $work"
  "$bin/switchyard" serve --config examples/order-saga/switchyard.yaml \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics_port" \
    --data-dir "$work/data" 2>"$work/broker.log" &
  pids+=($!)
fi
for _ in $(seq 1 100); do
  "$bin/switchyard" topics list >/dev/null 2>&1 && break
  if [ "${#pids[@]}" -gt 0 ] && ! kill -0 "${pids[0]}" 2>/dev/null; then cat "$work/broker.log"; exit 1; fi
  sleep 0.1
done

echo "== services: inventory, payment, shipping (logs: $work/*.log)"
for service in inventory payment shipping; do
  "$bin/order_saga" "$service" 2>"$work/$service.log" &
  pids+=($!)
done

echo "== order-service places ${ORDERS:-10} orders"
"$bin/order_saga" orders --count "${ORDERS:-10}" 2>"$work/orders.log"

echo "== the dead-letter topic of payment-service (orders with an invalid amount, after 3 attempts)"
poison=$(( ${ORDERS:-10} / 6 ))
for _ in $(seq 1 100); do
  [ "$("$bin/switchyard" dlq list payment-service | tail -n +2 | wc -l)" -ge "$poison" ] && break
  sleep 0.1
done
"$bin/switchyard" dlq list payment-service

echo "== progress of payment-service"
sleep 0.3 # let the last acks reach the 100 ms offset flush
"$bin/switchyard" subscriptions describe payment-service

if [ "${KEEP_RUNNING:-0}" = 1 ]; then
  echo "== broker and services running; open the console: http://127.0.0.1:$metrics_port/ui/"
  echo "   or try: $bin/switchyard graph; $bin/switchyard flow order-1   (Ctrl-C stops)"
  wait "${pids[0]}"
fi
