#!/usr/bin/python3
"""Sends bursts of Identity.Resolve(LOGIN) calls, all of a burst at once on one
connection, and prints one line per reply: the burst's number and the D-Bus error
name (or OK), in the order the replies arrive. Run with Debian's /usr/bin/python3
(python3-dbus, python3-gi).

usage: flood_client.py BUS_ADDRESS LOGIN BURST [BURST ...]
"""
import sys

import dbus
import dbus.mainloop.glib
from gi.repository import GLib

address, login, bursts = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3:]]
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(address)
resolve = bus.get_object("org.proxyuserd1", "/org/proxyuserd1", introspect=False) \
    .get_dbus_method("Resolve", "org.proxyuserd1.Identity")
loop = GLib.MainLoop()
state = {"burst": 0, "pending": 0}


def answered(line):
    print(f"{state['burst']} {line}", flush=True)
    state["pending"] -= 1
    if state["pending"] == 0:
        next_burst()


def next_burst():
    if state["burst"] == len(bursts):
        loop.quit()
        return
    count = bursts[state["burst"]]
    state["burst"] += 1
    state["pending"] = count
    for _ in range(count):
        resolve(login, signature="s", timeout=30,
                reply_handler=lambda *_: answered("OK"),
                error_handler=lambda e: answered(e.get_dbus_name()))


next_burst()
loop.run()
