#!/usr/bin/python3
"""A local user attacking proxyuserd, for tests/attacks.rs.

Listening (the default): one connection that makes itself known to proxyuserd (a
Resolve of LOGIN), listens to every signal of /org/proxyuserd1 it can get (also asking
the bus to let it eavesdrop), and prints one line per event:

    READY                       once the Resolve answered
    SIGNAL member arg arg ...   each signal received
    ADMIN OK | ADMIN <error>    with --poll-admin: Admin.ListRules every 100 ms

With --unknown-names N: sends N CheckProxy(LOGIN, NAME) calls at once, each NAME a
different account that does not exist, prints one line per reply (the D-Bus error name,
or OK) and exits.

Run with Debian's /usr/bin/python3 (python3-dbus, python3-gi).

usage: attack_client.py BUS_ADDRESS LOGIN [--poll-admin | --unknown-names N]
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
    count = int(sys.argv[4])
    check = bus.get_object("org.proxyuserd1", "/org/proxyuserd1", introspect=False) \
        .get_dbus_method("CheckProxy", "org.proxyuserd1.Identity")
    pending = [count]

    def answered(line):
        print(line, flush=True)
        pending[0] -= 1
        if pending[0] == 0:
            loop.quit()

    for i in range(count):
        check(login, f"pxt-nobody-{i}", signature="ss", timeout=60,
              reply_handler=lambda *_: answered("OK"),
              error_handler=lambda e: answered(e.get_dbus_name()))
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
