# leg-lib.sh — shared by the scripts that measure corepost and its load tools from the inside
# (relay-profile.sh, spool-cost.sh, tool-cost.sh, idle-wakeups.sh): the loopback-only network
# namespace, the scratch directory with the processes to stop on exit, and waiting for a
# listener. Source it after the options are parsed, with NAME (the script's name, for
# messages) and ARGS (its arguments) set.

# Run the script again inside a new network namespace with only loopback, once.
enter_netns() {
    if [[ -z "${COREPOST_LEG_NETNS:-}" ]]; then
        exec unshare -n env COREPOST_LEG_NETNS=1 "$0" "${ARGS[@]}"
    fi
    ip link set lo up
}

# TMP: a scratch directory removed on exit, after every PID in PIDS is stopped.
make_scratch() {
    TMP=$(mktemp -d "/tmp/$NAME.XXXXXX")
    chmod 755 "$TMP" # corepost may drop root for mail_owner and must still reach its queue.
    PIDS=()
    trap cleanup_scratch EXIT
}

cleanup_scratch() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}

wait_port() { # PORT: wait until something listens there
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "$NAME: nothing listens on port $1" >&2
    return 1
}
