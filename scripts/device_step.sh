# Sourced by the scripts/device_*.sh jobs: `step LIMIT CMD...` runs CMD under a time limit and says how it ended.
step() {
    local limit=$1 rc; shift
    echo "== $* (limit ${limit}s)"
    timeout -k 10 "$limit" "$@"
    rc=$?
    echo "== rc=$rc after ${SECONDS}s"
    return $rc
}
