# Sourced by the scripts/device_*.sh jobs: `step LIMIT CMD...` runs CMD under a time limit and says how it ended.
# The limit is cut to what is left of CALL_SECONDS (the device stops a call at 600 s, killing everything, so the
# job's own time runs out first and what it tars into $OUT still comes back); with nothing left the step is skipped.
CALL_SECONDS=${CALL_SECONDS:-570}
step() {
    local limit=$1 rc; shift
    local left=$((CALL_SECONDS - SECONDS))
    if [ "$left" -lt 10 ]; then
        echo "== skipped (the call's ${CALL_SECONDS}s are spent): $*"
        return 124
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $* (limit ${limit}s)"
    timeout -k 5 "$limit" "$@"
    rc=$?
    echo "== rc=$rc after ${SECONDS}s"
    return $rc
}
