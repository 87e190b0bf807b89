#!/usr/bin/env bash
# `make local`: DynamoDB Local, the table, a dev signing key and every route on one port.
# `make watch` (KEYGATE_WATCH=1): the same, but the four functions run under `cargo lambda watch`,
# rebuilt as their code changes, each at /lambda-url/<function>/... on KEYGATE_WATCH_PORT (9000).
# Ctrl-C (SIGINT) or SIGTERM stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/dynamodb-local.sh

api_port=${KEYGATE_PORT:-3000}
ddb_port=${DYNAMODB_LOCAL_PORT:-8000}
keygate=target/debug/keygate
# Local state (dev signing key, logs, env file); ignored by git. Tests point it elsewhere.
state=${KEYGATE_LOCAL_DIR:-.local}
mkdir -p "$state"

ensure_node_modules
if [ "${KEYGATE_WATCH:-}" != 1 ] && port_open "$api_port"; then
    echo "port $api_port is already in use; set KEYGATE_PORT to a free port" >&2
    exit 1
fi

DYNAMODB_PID=
SERVER_PID=
cleanup() {
    trap - EXIT INT TERM
    # `cargo lambda watch` ends the function processes it started when it is stopped.
    stop_pid "$SERVER_PID"
    stop_pid "$DYNAMODB_PID"
    echo "stopped" >&2
}
trap cleanup EXIT
# A stop asked for (Ctrl-C, or SIGTERM from a supervisor) is the normal end of a local run, not a failure.
trap 'exit 0' INT TERM

start_dynamodb_local "$ddb_port" "$state/dynamodb-local.log"
export_local_aws_env "$ddb_port"
export KEYGATE_TABLE=${KEYGATE_TABLE:-keygate}
"$keygate" table create

# The dev signing key lives in the ignored .local/ folder and is reused across runs.
if [ ! -s "$state/signing-key" ]; then
    "$keygate" keys new --out "$state/signing-key"
fi
KEYGATE_SIGNING_KEY=$(cat "$state/signing-key")
export KEYGATE_SIGNING_KEY

admin_token=${KEYGATE_ADMIN_TOKEN:-}
if [ -z "$admin_token" ]; then
    admin_token=$("$keygate" admin-token new 2>/dev/null)
fi
KEYGATE_ADMIN_TOKEN_SHA256=$(printf '%s' "$admin_token" | "$keygate" admin-token hash)
export KEYGATE_ADMIN_TOKEN_SHA256
unset KEYGATE_ADMIN_TOKEN
# Webhooks may go to a receiver on this machine, over plain http (never in a deployment).
export KEYGATE_WEBHOOK_ALLOW_PRIVATE=${KEYGATE_WEBHOOK_ALLOW_PRIVATE:-1}
# Tokens name the deployment that signed them; locally, its URL.
export KEYGATE_ISSUER=${KEYGATE_ISSUER:-http://127.0.0.1:$api_port}

if [ "${KEYGATE_WATCH:-}" = 1 ]; then
    api_port=${KEYGATE_WATCH_PORT:-9000}
    if port_open "$api_port"; then
        echo "port $api_port is already in use; set KEYGATE_WATCH_PORT to a free port" >&2
        exit 1
    fi
    cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$api_port" &
    SERVER_PID=$!
    base_url="http://127.0.0.1:$api_port/lambda-url/<function>"
    # The vendor routes are the issue function's.
    env_url="http://127.0.0.1:$api_port/lambda-url/issue"
else
    "$keygate" serve --port "$api_port" &
    SERVER_PID=$!
    base_url="http://127.0.0.1:$api_port"
    env_url=$base_url
fi
for _ in $(seq 1 600); do
    port_open "$api_port" && break
    kill -0 "$SERVER_PID" 2>/dev/null || exit 1
    sleep 0.1
done

# For a second shell: `source .local/env` (the README's walk-through does).
cat >"$state/env" <<ENV
export KEYGATE_URL=$env_url
export KEYGATE_ADMIN_TOKEN=$admin_token
export KEYGATE_ISSUER=$KEYGATE_ISSUER
ENV
chmod 600 "$state/env"

cat <<INFO

Keygate is running (Ctrl-C stops it and DynamoDB Local).
  base URL     $base_url
  admin token  $admin_token
  DynamoDB     http://127.0.0.1:$ddb_port (in memory; table $KEYGATE_TABLE)

  token issuer $KEYGATE_ISSUER

  In another shell: source .local/env   (sets KEYGATE_URL, KEYGATE_ADMIN_TOKEN and KEYGATE_ISSUER)

INFO
wait "$SERVER_PID"
