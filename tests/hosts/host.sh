#!/bin/sh
# PID 1 of one simulated host: its own mount, PID, network and UTS namespaces, made by
# tests/hosts/mod.rs with
#   unshare --mount --propagation private --pid --fork --mount-proc --net --uts host.sh DIR NAME
# Everything the host runs stays in the foreground under this script, so that the host
# ends with it (the machine's PID 1 does not reap orphans).
#
# DIR holds what the harness prepared for this host:
#   etc/{nsswitch.conf,nslcd.conf,passwd,group,machine-id,journald.conf}  bound over /etc
#   bus.conf  proxyuserd.toml  rules.d/  state/    the private bus and the daemon
#   journal   present: run systemd-journald;  upload-url: forward it there
# and where it reports: ready (all started) or failed (why not); logs in log/.
set -eu
dir=$1
name=$2
log=$dir/log
mkdir -p "$log"

fail() {
    echo "$*" > "$dir/failed"
    exit 1
}

# Waits up to 30 s for a command to succeed.
wait_for() {
    what=$1
    shift
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -le 300 ] || fail "$name: $what never came up (see $log)"
        sleep 0.1
    done
}

hostname "$name"
ip link set lo up

# This host's view of /etc: NSS reads passwd/group from files, then from LDAP through
# nslcd; the host's own files stay untouched.
for f in nsswitch.conf nslcd.conf passwd group machine-id; do
    mount --bind "$dir/etc/$f" "/etc/$f"
done
# A /run of its own: the system bus, journald's and nslcd's sockets are where a real
# host has them, and the machine's are hidden.
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/dbus /run/nslcd /run/proxyuserd
chown nslcd:nslcd /run/nslcd
# Home directories of directory accounts are made on the host (like pam_mkhomedir).
mount -t tmpfs -o mode=755 tmpfs /home

if [ -e "$dir/journal" ]; then
    # journald keeps this host's journal in its /run (volatile), with its own settings;
    # the machine's persistent journal and drop-ins are hidden.
    if [ -d /var/log/journal ]; then
        mount -t tmpfs -o mode=755 tmpfs /var/log/journal
    fi
    if [ -d /etc/systemd/journald.conf.d ]; then
        mount -t tmpfs -o mode=755 tmpfs /etc/systemd/journald.conf.d
    fi
    mount --bind "$dir/etc/journald.conf" /etc/systemd/journald.conf
    /lib/systemd/systemd-journald >"$log/journald" 2>&1 &
    wait_for journald test -S /run/systemd/journal/socket
fi

# The harness plugs the host into the fleet network once this namespace exists.
wait_for "the network link" test -e "$dir/link-up"

nslcd -n >"$log/nslcd" 2>&1 &
wait_for "nslcd (directory accounts)" getent passwd etl
for user in alice bob carol etl reporting gateway; do
    group=$(id -gn "$user")
    install -d -m 700 -o "$user" -g "$group" "/home/$user"
done

dbus-daemon --nofork --config-file="$dir/bus.conf" >"$log/dbus" 2>&1 &
wait_for "the system bus" test -S /run/dbus/system_bus_socket

"$PROXYUSERD" --config "$dir/proxyuserd.toml" >"$log/proxyuserd" 2>&1 &
wait_for proxyuserd busctl --system call org.proxyuserd1 /org/proxyuserd1 \
    org.freedesktop.DBus.Peer Ping

if [ -e "$dir/upload-url" ]; then
    # Forward this host's journal to the collector, as systemd-journal-upload.service does.
    /lib/systemd/systemd-journal-upload --url="$(cat "$dir/upload-url")" \
        --save-state=/run/journal-upload.state >"$log/journal-upload" 2>&1 &
fi

touch "$dir/ready"
# Reap whatever ends, until the harness ends the host.
while :; do
    wait || true
    sleep 1
done
