#!/usr/bin/env bash
# Runs the README's curl walk-through, word for word, against `make local` on free ports, and
# checks what it printed. Keeps the README honest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/dynamodb-local.sh

KEYGATE_PORT=$(free_port)
DYNAMODB_LOCAL_PORT=$(free_port)
export KEYGATE_PORT DYNAMODB_LOCAL_PORT
work=$(mktemp -d)
LOCAL_PID=
cleanup() {
    stop_pid "$LOCAL_PID"
    [ -n "${KEEP_WORK:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

# Only the walk-through's own lines: the ```bash blocks between the walk-through markers.
awk '/<!-- walkthrough:start -->/{on=1} /<!-- walkthrough:end -->/{on=0} on && /^```/{block=!block; next} on && block' README.md >"$work/walkthrough.sh"
[ -s "$work/walkthrough.sh" ] || { echo "no walk-through found in README.md" >&2; exit 1; }

# The walk-through runs in a scratch folder holding its own .local/, so a developer's own
# `make local` state is left alone.
export KEYGATE_LOCAL_DIR="$work/.local"
bash scripts/local.sh >"$work/local.log" 2>&1 &
LOCAL_PID=$!
for _ in $(seq 1 300); do
    [ -s "$KEYGATE_LOCAL_DIR/env" ] && port_open "$KEYGATE_PORT" && break
    kill -0 "$LOCAL_PID" 2>/dev/null || { cat "$work/local.log" >&2; exit 1; }
    sleep 0.1
done

(cd "$work" && bash -euo pipefail walkthrough.sh) >"$work/out.txt" 2>&1 || {
    echo "the README walk-through failed:" >&2
    cat "$work/out.txt" >&2
    exit 1
}
for expected in '"code": "VALID"' '"code": "ACTIVATION_LIMIT_REACHED"' '"deactivated": "laptop-1"' '"times_activated": 1' \
    '"borrowed_until": "20' '"seats_held": 1' '"remaining": 99' \
    '"license_type": "trial"' '"TRIAL_ALREADY_USED"'; do
    if ! grep -qF "$expected" "$work/out.txt"; then
        echo "the README walk-through did not print $expected:" >&2
        cat "$work/out.txt" >&2
        exit 1
    fi
done
# Stopping `make local` (SIGTERM here; Ctrl-C is SIGINT, trapped the same way) is its normal end:
# it exits 0, so make reports no error, and nothing it started is left listening.
kill -TERM "$LOCAL_PID"
stopped=0
wait "$LOCAL_PID" || stopped=$?
LOCAL_PID=
if [ "$stopped" != 0 ] || port_open "$KEYGATE_PORT" || port_open "$DYNAMODB_LOCAL_PORT"; then
    echo "stopping make local: exit $stopped, or a port still open:" >&2
    cat "$work/local.log" >&2
    exit 1
fi
echo "README walk-through: ok"
