#!/usr/bin/python3
"""A web gateway's use of proxyuserd (python3-dbus): web user LOGIN picks proxy user
PROXY, the gateway submits a job for it, waits, and downloads the result through the
file descriptor the daemon passes. The gateway's own account must be listed in
trusted_callers. Usage: gateway.py LOGIN PROXY PROGRAM [ARG...]
"""
import os
import sys

import dbus

login, proxy, argv = sys.argv[1], sys.argv[2], sys.argv[3:]

bus = dbus.SystemBus()  # honours DBUS_SYSTEM_BUS_ADDRESS
daemon = bus.get_object("org.proxyuserd1", "/org/proxyuserd1")
identity = dbus.Interface(daemon, "org.proxyuserd1.Identity")
jobs = dbus.Interface(daemon, "org.proxyuserd1.Jobs")

identity.SetProxy(login, proxy)
effective, _, uid, _ = identity.Resolve(login)
print(f"{login} acts as {effective} (uid {uid})")

job = jobs.Exec(login, argv, dbus.Dictionary({}, signature="ss"), "")
state, exit_code = jobs.Wait(login, job, timeout=24 * 3600)
print(f"job {job}: {state}, exit code {exit_code}")

fd = jobs.OpenResult(login, job, "stdout")  # a dbus.types.UnixFd
with os.fdopen(fd.take(), "rb") as result:
    sys.stdout.write(result.read().decode(errors="replace"))
sys.exit(0 if state == "exited" and exit_code == 0 else 1)
