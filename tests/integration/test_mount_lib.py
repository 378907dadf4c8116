"""Helpers shared by the test_mount_*.py integration tests (not a test).

Everything about the server is learned from an independent client (imaplib
through harness.Dovecot.client()), never from imapfs itself.
"""

import base64
import datetime
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check  # noqa: E402,F401


def mutf7_encode(name):
    """UTF-8 -> modified UTF-7 (RFC 3501 5.1.3)."""
    out, run = [], ""

    def flush():
        nonlocal run
        if run:
            b = base64.b64encode(run.encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + b.replace("/", ",") + "-")
            run = ""
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run += ch
    flush()
    return "".join(out)


def mutf7_decode(name):
    def repl(m):
        s = m.group(1)
        if s == "":
            return "&"
        s = s.replace(",", "/")
        s += "=" * (-len(s) % 4)
        return base64.b64decode(s).decode("utf-16-be")
    return re.sub(r"&([^-]*)-", repl, name)


def quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


LIST_RE = re.compile(rb'\((?P<attrs>[^)]*)\) (?P<delim>"[^"]*"|NIL) (?P<name>.*)$')


def server_mailboxes(c):
    """[(server name, delimiter, attrs)] from LIST "" "*"."""
    typ, data = c.list('""', "*")
    assert typ == "OK", data
    out = []
    for item in data:
        if isinstance(item, tuple):  # a literal name
            head, name = item
            m = LIST_RE.match(head.rstrip(b"{0123456789}").rstrip() + b" x")
            name = name.decode()
        else:
            m = LIST_RE.match(item)
            name = m.group("name").decode()
            if name.startswith('"'):
                name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        delim = m.group("delim").decode()
        delim = None if delim == "NIL" else delim[1:-1]
        out.append((name, delim, m.group("attrs").decode().split()))
    return out


def mailbox_path(server_name, delim):
    """The path imapfs shows for a mailbox with plain names (no escapes)."""
    decoded = mutf7_decode(server_name)
    parts = decoded.split(delim) if delim else [decoded]
    return os.path.join(*parts)


META_RE = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)|RFC822\.SIZE (\d+)|INTERNALDATE \"([^\"]+)\"")


def parse_date(s):
    return int(datetime.datetime.strptime(s, "%d-%b-%Y %H:%M:%S %z").timestamp())


def server_meta(c, mailbox):
    """{uid: (flags set without \\Recent, size, internaldate epoch)} of a mailbox."""
    typ, data = c.select(quote(mailbox), readonly=True)
    assert typ == "OK", data
    if int(data[0]) == 0:
        return {}
    typ, data = c.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
    assert typ == "OK", data
    out = {}
    for line in data:
        if isinstance(line, tuple):
            line = line[0]
        if not line:
            continue
        uid = flags = size = date = None
        for m in META_RE.finditer(line):
            if m.group(1):
                uid = int(m.group(1))
            elif m.group(2) is not None:
                flags = set(m.group(2).decode().split()) - {"\\Recent"}
            elif m.group(3):
                size = int(m.group(3))
            elif m.group(4):
                date = parse_date(m.group(4).decode())
        if uid is None:
            continue
        out[uid] = (flags if flags is not None else set(), size, date)
    return out


def server_bodies(c, mailbox, uids="1:*"):
    """{uid: BODY.PEEK[] bytes}."""
    typ, data = c.select(quote(mailbox), readonly=True)
    assert typ == "OK", data
    if int(data[0]) == 0:
        return {}
    typ, data = c.uid("FETCH", uids, "(UID BODY.PEEK[])")
    assert typ == "OK", data
    out = {}
    for item in data:
        if isinstance(item, tuple):
            m = re.search(rb"UID (\d+)", item[0])
            assert m, item[0]
            out[int(m.group(1))] = item[1]
    return out


def server_seen(c, mailbox):
    typ, data = c.select(quote(mailbox), readonly=True)
    assert typ == "OK", data
    typ, data = c.uid("SEARCH", "SEEN")
    assert typ == "OK", data
    return set(int(x) for x in data[0].split())


def wait_for(what, cond, timeout=30.0, step=0.1):
    """Poll cond() until true; fail with what after timeout (a bound, not a timing assert)."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError("not within %.0f s: %s" % (timeout, what))
        time.sleep(step)


def eml_uids(path):
    return sorted(int(n[:-4]) for n in os.listdir(path) if n.endswith(".eml"))


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def instance_pids(dc):
    """Processes of a Dovecot instance: the master and everything whose
    working folder lies inside the instance folder."""
    root = os.path.realpath(dc.dir) + "/"
    pids = []
    for ent in os.listdir("/proc"):
        if not ent.isdigit() or int(ent) == os.getpid():
            continue
        try:
            cwd = os.readlink("/proc/%s/cwd" % ent)
            cmd = open("/proc/%s/cmdline" % ent, "rb").read()
        except OSError:
            continue
        if (cwd + "/").startswith(root) or dc.config.encode() in cmd:
            pids.append(int(ent))
    return pids


def signal_instance(dc, sig):
    import signal as _signal  # noqa: F401
    for pid in instance_pids(dc):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def stop_dovecot_hard(dc):
    """dc.stop(), then end whatever of the instance outlived its master (its
    login and mail processes keep serving open connections otherwise): every
    process whose working folder lies inside the instance folder."""
    import signal
    dc.stop()
    root = os.path.realpath(dc.dir) + "/"
    for ent in os.listdir("/proc"):
        if not ent.isdigit() or int(ent) == os.getpid():
            continue
        try:
            cwd = os.readlink("/proc/%s/cwd" % ent)
        except OSError:
            continue
        if (cwd + "/").startswith(root):
            try:
                os.kill(int(ent), signal.SIGKILL)
            except OSError:
                pass
