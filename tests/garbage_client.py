#!/usr/bin/python3
"""Sends malformed and oversized calls to proxyuserd and prints one line per call:
the D-Bus error name, or OK. Run with Debian's /usr/bin/python3 (python3-dbus).

usage: garbage_client.py BUS_ADDRESS ROUNDS
"""
import random
import sys

import dbus

address, rounds = sys.argv[1], int(sys.argv[2])
bus = dbus.bus.BusConnection(address)
obj = bus.get_object("org.proxyuserd1", "/org/proxyuserd1", introspect=False)
rng = random.Random(1234)

ALPHABET = "abc-_.@$/*: \t\n\x7f\x01é" + "x" * 10


def junk(n):
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def call(iface, method, signature, *args):
    try:
        obj.get_dbus_method(method, iface)(*args, signature=signature, timeout=30)
        print("OK")
    except dbus.DBusException as e:
        print(e.get_dbus_name())


I, A = "org.proxyuserd1.Identity", "org.proxyuserd1.Admin"
MiB = "a" * (1024 * 1024)
for _ in range(rounds):
    call(I, "Resolve", "s", junk(rng.randint(0, 300)))
    call(I, "SetProxy", "ss", junk(rng.randint(0, 40)), junk(rng.randint(0, 40)))
    call(I, "CheckProxy", "ss", MiB, MiB)
    call(I, "Resolve", "u", 7)  # wrong signature
    call(I, "Resolve", "", )  # no argument
    call(I, "SetProxy", "sss", "a", "b", "c")  # too many
    call(I, "NoSuchMethod", "s", "x")
    call(A, "AddRule", "s", junk(rng.randint(0, 2000)))
    call(A, "AddRule", "s", MiB)
    call(A, "RemoveRule", "s", junk(50))
    call(A, "AuditLog", "tu", 2**64 - 1, 2**32 - 1)
    call(I, "Resolve", "ay", [0xFF, 0xFE, 0x00])
