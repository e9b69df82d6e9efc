#!/bin/sh
# Start redis-server with `--maxmemory` tied to this container's memory limit, so that a full
# Redis refuses writes (noeviction) before the kernel kills it for memory.
#   REDIS_MAXMEMORY=auto (default): three quarters of the cgroup's limit; none without a limit.
#   REDIS_MAXMEMORY=0: no cap.  REDIS_MAXMEMORY=2gb (any redis size): that cap.
# REDIS_LOGLEVEL (debug, verbose, notice, warning), when set, is passed as --loglevel.
# Arguments are redis-server's; the image's own entrypoint runs them when it has one.
set -eu

cgroup_limit() {
    if [ -r /sys/fs/cgroup/memory.max ]; then
        cat /sys/fs/cgroup/memory.max
    elif [ -r /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
        cat /sys/fs/cgroup/memory/memory.limit_in_bytes
    else
        echo max
    fi
}

maxmemory="${REDIS_MAXMEMORY:-auto}"
if [ "$maxmemory" = auto ]; then
    limit="$(cgroup_limit)"
    case "$limit" in
        '' | max | *[!0-9]*) maxmemory=0 ;;
        # cgroup v1 reports "no limit" as a number near 2^63.
        *) if [ "${#limit}" -ge 18 ]; then maxmemory=0; else maxmemory=$((limit * 3 / 4)); fi ;;
    esac
fi
echo "kcw-redis: maxmemory ${maxmemory} (REDIS_MAXMEMORY=${REDIS_MAXMEMORY:-auto}, memory limit $(cgroup_limit))"

if [ -n "${REDIS_LOGLEVEL:-}" ]; then
    set -- "$@" --loglevel "$REDIS_LOGLEVEL"
fi
if command -v docker-entrypoint.sh >/dev/null 2>&1; then
    set -- docker-entrypoint.sh "$@"
fi
exec "$@" --maxmemory "$maxmemory"
