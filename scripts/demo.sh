#!/usr/bin/env bash
# Runs the broker with its embedded durable log and shows events flowing
# through the order saga (examples/order-saga/run.sh): orders are placed,
# rules route them, inventory, payment and shipping services react, a
# declined payment is compensated, a flaky one retried and a poison one
# dead-lettered. Broker and services keep running afterwards; try the CLI
# against them, and stop with Ctrl-C. DEMO_EXIT=1 stops after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${DEMO_EXIT:-0}" = 1 ]; then export KEEP_RUNNING=0; else export KEEP_RUNNING=1; fi
exec examples/order-saga/run.sh
