#!/usr/bin/env bash
# Contract test: schemathesis (pinned in tests/contract/requirements.txt, installed into
# .venv-contract/ by `make test-contract`) against a local stack this script starts and stops,
# whatever way it ends: DynamoDB Local and `keygate serve`, each on a free port, killed by PID.
# The keygate binary is $KEYGATE_BIN (default target/debug/keygate; this script never builds).
set -euo pipefail
# KEYGATE_BIN is taken from where the script is called; the default from the repository root.
keygate=${KEYGATE_BIN:-}
case $keygate in
    "" | /*) ;;
    *) keygate=$PWD/$keygate ;;
esac
cd "$(dirname "$0")/../.."
. scripts/dynamodb-local.sh
keygate=${keygate:-$PWD/target/debug/keygate}
venv=${CONTRACT_VENV:-.venv-contract}
if [ ! -x "$keygate" ]; then
    echo "no keygate binary at $keygate (build it with cargo build -p keygate-cli, or set KEYGATE_BIN)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "schemathesis is not installed in $venv (make test-contract installs it)" >&2
    exit 1
fi

work=$(mktemp -d -t keygate-schemathesis.XXXXXX)
DYNAMODB_PID=
SERVER_PID=
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_pid "$SERVER_PID"
    stop_pid "$DYNAMODB_PID"
    if [ "$status" -ne 0 ] && [ -s "$work/server.log" ]; then
        echo "--- the last lines of keygate serve's log ---" >&2
        tail -n 40 "$work/server.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_node_modules
ddb_port=$(free_port)
start_dynamodb_local "$ddb_port" "$work/dynamodb-local.log"
export_local_aws_env "$ddb_port"
export KEYGATE_TABLE=keygate-contract
"$keygate" table create >/dev/null

port=$(free_port)
export KEYGATE_ISSUER=http://127.0.0.1:$port
start_keygate_serve "$keygate" "$port" "$work/server.log" || exit 1
# schemathesis' hooks and auth read these.
export KEYGATE_URL=http://127.0.0.1:$port KEYGATE_ADMIN_TOKEN

# Deterministic: a fixed seed and a bounded number of cases per operation (tests/contract/schemathesis.toml),
# and Hypothesis' own files in the scratch directory, not the repository.
export HYPOTHESIS_STORAGE_DIRECTORY=$work/hypothesis
status=0
"$venv/bin/schemathesis" --config-file tests/contract/schemathesis.toml run "${KEYGATE_OPENAPI:-docs/openapi.yaml}" \
    --url "$KEYGATE_URL" --checks all "$@" || status=$?
# The edges of the rules, which random requests rarely hit.
"$venv/bin/python" tests/contract/edge_cases.py || status=$?
exit "$status"
