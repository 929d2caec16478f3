#!/usr/bin/python3
"""Calls one method in a loop for SECS seconds (one call every PERIOD_MS, or back to
back with 0) and prints {"ok": N, "errors": {name: N}} as JSON. Run with Debian's
/usr/bin/python3 (python3-dbus).

usage: load_client.py BUS_ADDRESS SECS PERIOD_MS exec LOGIN ARG_COUNT ARG_BYTES
       load_client.py BUS_ADDRESS SECS PERIOD_MS toggle LOGIN PROXY
"""
import json
import sys
import time

import dbus

address, secs, period = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) / 1000
what, args = sys.argv[4], sys.argv[5:]
bus = dbus.bus.BusConnection(address)
daemon = bus.get_object("org.proxyuserd1", "/org/proxyuserd1", introspect=False)
identity = dbus.Interface(daemon, "org.proxyuserd1.Identity")
jobs = dbus.Interface(daemon, "org.proxyuserd1.Jobs")

if what == "exec":
    login, count, size = args[0], int(args[1]), int(args[2])
    argv = ["/bin/true"] + ["x" * size] * count

    def call(turn):
        jobs.Exec(login, argv, dbus.Dictionary({}, signature="ss"), "/", timeout=60)
elif what == "toggle":
    login, proxy = args

    def call(turn):
        if turn % 2 == 0:
            identity.SetProxy(login, proxy, timeout=60)
        else:
            identity.ClearProxy(login, timeout=60)
else:
    sys.exit(f"unknown call {what}")

ok, errors, turn = 0, {}, 0
end = time.monotonic() + secs
next_call = time.monotonic()
while time.monotonic() < end:
    if period:
        time.sleep(max(0.0, next_call - time.monotonic()))
        next_call += period
    try:
        call(turn)
        ok += 1
    except dbus.DBusException as e:
        name = e.get_dbus_name() or str(e)
        errors[name] = errors.get(name, 0) + 1
    turn += 1
print(json.dumps({"ok": ok, "errors": errors}), flush=True)
