#!/usr/bin/env bash
# The load test of `make bench`: a release `keygate serve` on the DynamoDB Local that
# scripts/with-dynamodb-local.sh started, driven by locust: the mixed workload
# (bench/load/locustfile.py) at saturation (no pause between calls) and at a fixed rate, then the
# hot license (bench/load/hot_pool.py: one large floating pool, many devices heartbeating); at the end every user finishes its call
# (--stop-timeout), so what users were told is complete when the stored state is compared. Writes the figures, the unexpected
# answers and the invariant violations as JSON to $2.
#   bench/load/run.sh KEYGATE_BINARY OUT.json
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/dynamodb-local.sh
keygate=${1:?the keygate binary}
out=${2:?where to write the results}
users=${LOAD_USERS:-16}
seconds=${LOAD_SECONDS:-20}
# Calls per second per user in the fixed-rate run (16 users x 8 = 128/s: below saturation here).
rate=${LOAD_RATE_PER_USER:-8}
locust=.venv-bench/bin/locust
# The hot license: a pool of this many seats, and fewer devices, so none may be refused.
hot_seats=${HOT_SEATS:-10000}
hot_devices=${HOT_DEVICES:-2000}

export KEYGATE_TABLE="load-$$"
"$keygate" table create >/dev/null
export AWS_LAMBDA_LOG_LEVEL=ERROR
port=$(free_port)
work=$(mktemp -d -t keygate-load.XXXXXX)
SERVER_PID=
cleanup() {
    stop_pid "$SERVER_PID"
    rm -rf "$work"
}
trap cleanup EXIT
# The request path alone (in AWS the events function runs apart from the HTTP functions).
start_keygate_serve "$keygate" "$port" "$work/serve.log" --no-events

run() {
    local mode=$1 file=$2
    shift 2
    env KEYGATE_URL="http://127.0.0.1:$port" KEYGATE_ADMIN_TOKEN="$KEYGATE_ADMIN_TOKEN" LOAD_USERS="$users" \
        LOAD_OUT="$work/$mode.json" "$@" \
        "$locust" -f "$file" --headless --users "$users" --spawn-rate "$users" \
        --run-time "${seconds}s" --stop-timeout 30 --host "http://127.0.0.1:$port" --csv "$work/$mode" --only-summary \
        --exit-code-on-error 0 --loglevel WARNING >"$work/$mode.log" 2>&1
}
echo "load: saturation, $users users for ${seconds}s" >&2
run saturation bench/load/locustfile.py
echo "load: fixed rate, $users users x $rate/s for ${seconds}s" >&2
run fixed bench/load/locustfile.py LOAD_RATE="$rate"
echo "load: hot license, $hot_devices devices on $hot_seats floating seats, $users users for ${seconds}s" >&2
run hot bench/load/hot_pool.py HOT_SEATS="$hot_seats" HOT_DEVICES="$hot_devices"

python3 - "$work" "$out" "$users" "$seconds" "$rate" "$hot_seats" "$hot_devices" <<'PY'
import csv, json, sys
work, out, users, seconds, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
result = {"users": users, "seconds": seconds, "rate_per_user": rate, "runs": {},
          "hot": {"seats": int(sys.argv[6]), "devices": int(sys.argv[7])}}
for mode in ("saturation", "fixed", "hot"):
    with open(f"{work}/{mode}_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    with open(f"{work}/{mode}.json") as f:
        checked = json.load(f)
    def figures(row):
        return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                "rps": float(row["Requests/s"]), "p50": float(row["50%"]), "p99": float(row["99%"])}
    result["runs"][mode] = {
        "total": figures(rows["Aggregated"]),
        "operations": {name: figures(row) for name, row in rows.items() if name != "Aggregated"},
        "unexpected": checked["unexpected"],
        "violations": checked["violations"],
    }
json.dump(result, open(out, "w"), indent=1)
PY
echo "load: wrote $out" >&2
