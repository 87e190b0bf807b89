#!/usr/bin/env bash
# Runs a command against a fresh in-memory DynamoDB Local on a free port, then stops it,
# whatever way the command ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/dynamodb-local.sh

ensure_node_modules
port=$(free_port)
log=$(mktemp -t dynamodb-local.XXXXXX.log)
DYNAMODB_PID=
cleanup() {
    stop_pid "$DYNAMODB_PID"
    rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start_dynamodb_local "$port" "$log"
export_local_aws_env "$port"
echo "DynamoDB Local on port $port (pid $DYNAMODB_PID)" >&2
"$@"
