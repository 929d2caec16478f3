#!/usr/bin/python3
"""A local user attacking proxyuserd, for tests/attacks.rs.

Listening (the default): one connection that makes itself known to proxyuserd (a
Resolve of LOGIN), listens to every signal of /org/proxyuserd1 it can get (also asking
the bus to let it eavesdrop), and prints one line per event:

    READY                       once the Resolve answered
    SIGNAL member arg arg ...   each signal received
    ADMIN OK | ADMIN <error>    with --poll-admin: Admin.ListRules every 100 ms

With --unknown-names BURST...: sends bursts of CheckProxy(LOGIN, NAME) calls, all of a
burst at once, each NAME a different account that does not exist; prints one line per
reply (the burst's number and the D-Bus error name, or OK) and exits.

Run with Debian's /usr/bin/python3 (python3-dbus, python3-gi).

usage: attack_client.py BUS_ADDRESS LOGIN [--poll-admin | --unknown-names BURST...]
"""
import sys

import dbus
import dbus.mainloop.glib
from gi.repository import GLib

address, login = sys.argv[1], sys.argv[2]
poll_admin = "--poll-admin" in sys.argv[3:]
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(address)
loop = GLib.MainLoop()

if sys.argv[3:4] == ["--unknown-names"]:
    bursts = [int(n) for n in sys.argv[4:]]
    check = bus.get_object("org.proxyuserd1", "/org/proxyuserd1", introspect=False) \
        .get_dbus_method("CheckProxy", "org.proxyuserd1.Identity")
    state = {"burst": 0, "pending": 0, "name": 0}

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
            state["name"] += 1
            check(login, f"pxt-nobody-{state['name']}", signature="ss", timeout=60,
                  reply_handler=lambda *_: answered("OK"),
                  error_handler=lambda e: answered(e.get_dbus_name()))

    next_burst()
    loop.run()
    sys.exit(0)


def on_signal(*args, **keywords):
    print("SIGNAL", keywords["member"], *[str(a) for a in args], flush=True)


bus.add_signal_receiver(on_signal, path="/org/proxyuserd1", member_keyword="member")
try:
    # Messages addressed to others, if the bus policy let us (it must not).
    bus.add_match_string("eavesdrop='true',type='signal',path='/org/proxyuserd1'")
except dbus.exceptions.DBusException as e:
    print("EAVESDROP refused", e.get_dbus_name(), flush=True)

daemon = bus.get_object("org.proxyuserd1", "/org/proxyuserd1", introspect=False)
daemon.get_dbus_method("Resolve", "org.proxyuserd1.Identity")(login, signature="s")
print("READY", flush=True)

if poll_admin:
    list_rules = daemon.get_dbus_method("ListRules", "org.proxyuserd1.Admin")

    def poll():
        list_rules(
            reply_handler=lambda *_: print("ADMIN OK", flush=True),
            error_handler=lambda e: print("ADMIN", e.get_dbus_name(), flush=True),
        )
        return True

    GLib.timeout_add(100, poll)

loop.run()
