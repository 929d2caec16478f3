#!/usr/bin/python3
"""Makes CALLS random but well-typed calls of every method of every interface in the
introspection file (each argument drawn by its D-Bus type and name from valid names,
garbage, huge strings, odd paths and ids seen in earlier replies), then prints
{"calls": N, "replies": {"Interface.Method": {"OK" or error name: count}}} as JSON.
Every job it starts carries PXT_RANDOM_RUN=MARKER in its environment. Run with
Debian's /usr/bin/python3 (python3-dbus).

usage: random_client.py BUS_ADDRESS INTROSPECTION_XML SEED CALLS MARKER
"""
import json
import os
import random
import re
import sys
import xml.etree.ElementTree as ET

import dbus

address, xml_path, seed, calls, marker = sys.argv[1:6]
rng = random.Random(int(seed))
bus = dbus.bus.BusConnection(address)
daemon = bus.get_object("org.proxyuserd1", "/org/proxyuserd1", introspect=False)

# (interface, method, [(type, name)]) of every method; args are "in" unless marked.
METHODS = []
# The file's comments hold "--", which XML does not allow there: drop them first.
with open(xml_path) as f:
    introspection = re.sub(r"<!--.*?-->", "", f.read(), flags=re.S)
for iface in ET.fromstring(introspection).iter("interface"):
    for method in iface.iter("method"):
        args = [
            (a.get("type"), a.get("name"))
            for a in method.iter("arg")
            if a.get("direction", "in") == "in"
        ]
        METHODS.append((iface.get("name"), method.get("name"), args))

USERS = [
    "pxt-alice", "pxt-bob", "pxt-carol", "pxt-mallory", "pxt-etl", "pxt-report",
    "pxt-gw", "pxt-admin", "root", "nobody", "pxt-nosuchuser",
]
GROUPS = ["pxt-data", "pxt-svc", "pxt-admins", "pxt-extra1", "nogroup"]
ODD = [
    "", " ", "-rf", "a/b", "a b", "a\nb", "a\x01b", "..", ".", "1000", "0", "*", "é",
    "\u202e", "\x7f", "pxt-alice ", "PXT-ALICE", "$(id)", "'", '"', "\\",
    "%s%n", "x" * 129, "x" * 128,
]
PATHS = [
    "", "/", "/tmp", "/root", "relative", "/nonexistent", "/proc/self", "/dev/null",
    "/tmp/../etc", "//", "/etc/shadow", "/var/lib/proxyuserd", "/tmp/" + "d" * 300,
]
STREAMS = ["stdout", "stderr", "both", "STDOUT", ""]
ALPHABET = "abcxyz019-_.@$/*:#[]=;\" \t\n\x01\x7fé"
# Ids, tickets and sessions seen in replies, to call back with.
seen = []


def junk():
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))


def huge():
    return rng.choice("ax-/") * rng.choice([300, 4096, 65537, 1 << 20])


def any_string():
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(ODD)
    if roll < 0.55:
        return junk()
    if roll < 0.6:
        return huge()
    if roll < 0.75:
        return rng.choice(PATHS)
    if roll < 0.9 and seen:
        return rng.choice(seen)
    return rng.choice(USERS)


def a_seen_id():
    if seen and rng.random() < 0.7:
        return rng.choice(seen)
    return rng.choice([
        "%016x" % rng.getrandbits(64), "job-%d" % rng.randint(0, 99),
        "../../etc/passwd", junk(), "",
    ])


def rule_text():
    roll = rng.random()
    if roll < 0.6:
        kind = rng.choice(["allow", "deny"])
        lines = ["[[%s]]" % kind]
        if rng.random() < 0.8:
            lines.append("logins = %s" % json.dumps(rng.sample(USERS, rng.randint(1, 2))))
        else:
            lines.append("login_groups = %s" % json.dumps([rng.choice(GROUPS)]))
        if rng.random() < 0.8:
            lines.append("proxies = %s" % json.dumps(rng.choice([["pxt-etl"], ["pxt-report"], ["*"], [rng.choice(USERS)]])))
        else:
            lines.append("proxy_groups = %s" % json.dumps([rng.choice(GROUPS)]))
        if rng.random() < 0.3:
            lines.append("expires = %s" % rng.choice(["2030-01-01T00:00:00Z", "2001-01-01T00:00:00Z", "2030-01-01", "9999-12-31T23:59:59-23:59"]))
        return "\n".join(lines) + "\n"
    if roll < 0.7:
        return "[[allow]]\n[[deny]]\nlogins=[\"a\"]\n"
    if roll < 0.8:
        return "[proxy_users]\nusers = [\"pxt-alice\"]\n"
    return any_string()


def cookie_header():
    parts = []
    for _ in range(rng.randint(0, 4)):
        name = rng.choice([
            "linkis_user_session_ticket_id_v1", "linkis_user_session_proxy_ticket_id_v1",
            "theme", junk(),
        ])
        parts.append("%s=%s" % (name, a_seen_id()))
    if rng.random() < 0.1:
        return any_string()
    return rng.choice(["; ", ";", " ;\t"]).join(parts)


def argv():
    roll = rng.random()
    if roll < 0.5:
        return rng.choice([
            ["/bin/true"], ["/bin/false"], ["/bin/sleep", "0.2"],
            ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
            ["/bin/sh", "-c", "sleep 0.5 & echo $!"],
            ["/bin/sh", "-c", "sleep 1"], ["/usr/bin/id"], ["/bin/pwd"],
        ])
    if roll < 0.6:
        return ["/bin/echo"] + [any_string() for _ in range(rng.randint(0, 5))]
    if roll < 0.7:
        return ["/bin/true"] + ["x" * 1000] * rng.randint(1, 300)
    if roll < 0.8:
        return []
    return [rng.choice(["relative", "/nonexistent/x", "/", "/etc/passwd", "/bin"]) if rng.random() < 0.5 else any_string()]


def environment():
    env = {"PXT_RANDOM_RUN": marker}
    for _ in range(rng.randint(0, 3)):
        key = rng.choice(["PATH", "LD_PRELOAD", "HOME", "LANG", junk(), "x" * 5000])
        env[key] = any_string()
    return dbus.Dictionary(env, signature="ss")


def exec_options():
    """ExecWithOptions' options: none, stdin as a descriptor, or what it must refuse."""
    roll = rng.random()
    if roll < 0.3:
        options = {}
    elif roll < 0.7:
        options = {"stdin": dbus.types.UnixFd(os.open("/dev/null", os.O_RDONLY))}
    elif roll < 0.85:
        options = {"stdin": dbus.String(any_string())}
    else:
        options = {junk(): dbus.UInt32(integer("u"))}
    return dbus.Dictionary(options, signature="sv")


def integer(kind):
    bits = {"u": 32, "t": 64, "i": 31, "x": 63}[kind]
    return rng.choice([0, 1, 2, 10, 1000, (1 << bits) - 1, rng.getrandbits(bits)])


def string_for(name):
    if rng.random() < 0.15:
        return any_string()
    if name in ("login", "proxy", "user", "requester", "target"):
        return rng.choice(USERS)
    if name in ("job_id", "id", "ticket", "session", "cursor"):
        return a_seen_id()
    if name == "cwd":
        return rng.choice(["", "/tmp"]) if rng.random() < 0.5 else rng.choice(PATHS)
    if name == "stream":
        return rng.choice(STREAMS)
    if name == "rule_toml":
        return rule_text()
    if name == "cookie_header":
        return cookie_header()
    if name in ("service", "tty", "rhost"):
        return rng.choice(["sshd", "su", "login", "pts/1", "tty1", "10.0.0.1", "", junk()])
    return any_string()


def value(kind, name):
    if kind == "s":
        return string_for(name)
    if kind == "as":
        return dbus.Array(argv() if name == "argv" else [any_string() for _ in range(rng.randint(0, 4))], signature="s")
    if kind == "a{ss}":
        return environment()
    if kind == "a{sv}":
        return exec_options()
    if kind in ("u", "t", "i", "x"):
        return integer(kind)
    if kind == "b":
        return rng.random() < 0.5
    sys.exit(f"random_client.py: no generator for D-Bus type {kind} ({name})")


def remember(reply):
    if isinstance(reply, dbus.types.UnixFd):
        os.close(reply.take())
    elif isinstance(reply, (list, tuple, dbus.Array, dbus.Struct)):
        for item in reply:
            remember(item)
    elif isinstance(reply, (dict, dbus.Dictionary)):
        for k, v in reply.items():
            remember(k)
            remember(v)
    elif isinstance(reply, str) and 0 < len(reply) <= 200 and not any(c.isspace() for c in reply):
        if len(seen) < 400:
            seen.append(str(reply))
        else:
            seen[rng.randrange(len(seen))] = str(reply)


# Pairs the base rules allow, and the jobs started so far with their login: drawn often
# enough that calls get past the checks to the work behind them.
ALLOWED = [("pxt-alice", "pxt-etl"), ("pxt-bob", "pxt-etl"), ("pxt-alice", "pxt-report")]
jobs = []

replies = {}
for turn in range(int(calls)):
    # Every method at least once, in order; then at random.
    iface, method, args = METHODS[turn] if turn < len(METHODS) else rng.choice(METHODS)
    values = [value(kind, name) for kind, name in args]
    if method in ("SetProxy", "CheckProxy") and rng.random() < 0.5:
        values[0:2] = rng.choice(ALLOWED)
    elif method == "Exec" and rng.random() < 0.5:
        values[0] = rng.choice(ALLOWED)[0]
    elif method in ("Wait", "Cancel", "OpenResult") and jobs and rng.random() < 0.6:
        values[0:2] = rng.choice(jobs)
    signature = "".join(kind for kind, _ in args)
    try:
        reply = daemon.get_dbus_method(method, iface)(*values, signature=signature, timeout=60)
        remember(reply)
        if method == "Exec":
            jobs.append((values[0], str(reply)))
        outcome = "OK"
    except dbus.DBusException as e:
        outcome = e.get_dbus_name() or str(e)
    key = "%s.%s" % (iface.rsplit(".", 1)[1], method)
    replies.setdefault(key, {})
    replies[key][outcome] = replies[key].get(outcome, 0) + 1
print(json.dumps({"calls": int(calls), "replies": replies}), flush=True)
