#!/bin/sh
# Managed by tpa: restarts this etcd member after its files changed, one member at a time
# (planner/patroni.rs). The lines between the markers are filled in by the planner.
#
#   etcd-tpa current   exit 0 when etcd runs and started after its files last changed
#   etcd-tpa restart   restart it while holding the cluster's restart lock (`etcdctl lock`),
#                      then wait until every member is healthy again
set -eu
# tpa: settings
ENDPOINTS=@ENDPOINTS@
CACERT=@CACERT@
CERT=@CERT@
KEY=@KEY@
FILES=@FILES@
# tpa: end of settings

ctl() { /usr/bin/etcdctl --endpoints="$ENDPOINTS" --cacert="$CACERT" --cert="$CERT" --key="$KEY" "$@"; }

healthy() { ctl --dial-timeout=2s --command-timeout=3s endpoint health >/dev/null 2>&1; }

# Waits up to 120 s for every member to be healthy; false when they are not.
wait_healthy() {
    deadline=$(($(date +%s) + 120))
    until healthy; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 1
    done
}

case "${1:-}" in
current)
    systemctl is-active --quiet etcd.service || exit 1
    started=$(systemctl show etcd.service -p ActiveEnterTimestamp --timestamp=unix --value)
    started=${started#@}
    for f in $FILES; do
        [ ! -e "$f" ] || [ "$(stat -c %Y "$f")" -le "$started" ] || exit 1
    done
    ;;
restart)
    # Every member healthy first: one restarting now holds the lock until it is healthy again,
    # so this also waits for it. (After 120 s of a member down there is no quorum margin left
    # to protect, and this change may be what the cluster needs: restart without the lock.)
    if ! wait_healthy; then
        echo "not every etcd member is healthy after 120 s: restarting without the lock" >&2
        exec "$0" restart-locked
    fi
    # Holding the lock, so that two members never restart at once.
    exec /usr/bin/etcdctl --endpoints="$ENDPOINTS" --cacert="$CACERT" --cert="$CERT" \
        --key="$KEY" lock tpa-etcd-restart "$0" restart-locked
    ;;
restart-locked)
    systemctl restart etcd.service
    if wait_healthy; then
        echo "etcd restarted; every member is healthy"
        exit 0
    fi
    echo "etcd restarted, but not every member is healthy after 120 s" >&2
    exit 1
    ;;
*)
    echo "usage: etcd-tpa current|restart" >&2
    exit 2
    ;;
esac
