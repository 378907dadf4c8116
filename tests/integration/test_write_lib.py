"""Shared helpers for the write-path integration tests (test_write_*.py).

Not a test itself: the test_write_*.py scripts import it. Python 3 stdlib only,
on top of harness.py. The server side is always checked with an independent
client (imaplib via dc.client(), or doveadm), never through the mount.

Conventions:
  ok(cond, what, detail)  one check: prints "ok: what" or "FAIL: what" + detail;
                          a failed check does not stop the test function
  need(cond, what, ...)   a check the rest of the test function depends on:
                          when it fails the function stops (the file goes on)
  main(tests, ...)        runs every test_* function against one private
                          Dovecot, prints a summary, exits 1 on any failure
"""

import calendar
import errno
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import Dovecot, Imapfs, build_dir, crlf, corpus_manifest  # noqa: E402,F401

# How long to wait for a change made by ANOTHER client (or for set-up data) to
# show through the mount. Changes made through the mount must show at once:
# those checks never wait.
OTHER_CLIENT_WAIT = 10.0


class Abort(Exception):
    """A precondition of the current test function failed."""


class _Results:
    checks = 0
    failures = 0
    failed_tests = []
    current = None


R = _Results()


def ok(cond, what, detail=""):
    R.checks += 1
    if cond:
        print("ok: %s" % what)
        return True
    R.failures += 1
    if R.current and R.current not in R.failed_tests:
        R.failed_tests.append(R.current)
    print("FAIL: %s" % what)
    if detail:
        for line in str(detail).splitlines():
            print("      %s" % line)
    return False


def need(cond, what, detail=""):
    if not ok(cond, what, detail):
        raise Abort(what)
    return True


def note(text):
    print("  .. %s" % text)


def ename(e):
    return errno.errorcode.get(e, str(e)) if e is not None else "success"


def errno_of(fn, *args, **kw):
    """Run fn; return the OSError's errno, or None when it succeeded."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return None


def expect_errno(want, what, fn, *args, **kw):
    """Check that fn(*args) fails with errno want."""
    got = errno_of(fn, *args, **kw)
    return ok(got == want, "%s -> %s" % (what, ename(want)),
              "got %s" % ("success (no error)" if got is None else ename(got)))


def run(cmd, timeout=120, **kw):
    """subprocess.run with captured text output; a hang is a failure, not a hang."""
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, -1, "", "TIMEOUT after %d s" % timeout)


def wait_until(pred, timeout=OTHER_CLIENT_WAIT, step=0.2):
    """Poll pred() until true or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


# --- messages ------------------------------------------------------------------

def new_message(tag, body=None, crlf_ends=False, extra_headers=""):
    """A small unique message (LF line ends unless crlf_ends). Returns
    (bytes, message_id)."""
    mid = "<%s.%s@imapfs.test>" % (re.sub(r"[^A-Za-z0-9.-]", "-", tag), secrets.token_hex(6))
    text = ("From: Test Sender <sender@imapfs.test>\n"
            "To: Test Rcpt <rcpt@imapfs.test>\n"
            "Subject: imapfs write test %s\n"
            "Date: Thu, 26 Nov 2026 10:00:00 +0000\n"
            "Message-ID: %s\n%s"
            "\n"
            "%s\n") % (tag, mid, extra_headers, body or ("Body of %s.\nSecond line." % tag))
    data = text.encode()
    if crlf_ends:
        data = crlf(data)
    return data, mid


def corpus_files(n, mailbox="INBOX", skip=0):
    """n corpus message files (raw .txt paths) holding no CR and no NUL byte, so
    the expected server bytes are exactly crlf(raw)."""
    out = []
    for path in corpus_manifest()[mailbox][skip:]:
        with open(path, "rb") as f:
            raw = f.read()
        if b"\r" in raw or b"\0" in raw or not raw:
            continue
        out.append(path)
        if len(out) == n:
            break
    if len(out) < n:
        raise RuntimeError("the corpus has only %d usable messages in %s" % (len(out), mailbox))
    return out


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


# --- modified UTF-7 and quoting (independent of imapfs's own code) --------------

def mutf7(name):
    """RFC 3501 5.1.3 modified UTF-7."""
    out, run_ = [], []

    def flush():
        if run_:
            b = "".join(run_).encode("utf-16-be")
            import base64
            out.append("&" + base64.b64encode(b).decode().rstrip("=").replace("/", ",") + "-")
            run_.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run_.append(ch)
    flush()
    return "".join(out)


def qstr(raw):
    """An IMAP quoted string for a (7-bit) mailbox name."""
    return '"' + raw.replace("\\", "\\\\").replace('"', '\\"') + '"'


def qmbox(name):
    """The quoted, mUTF-7 encoded form of a decoded mailbox name, for imaplib."""
    return qstr(mutf7(name))


# --- the independent client ------------------------------------------------------

def imap_ok(typ_data, what):
    typ, data = typ_data
    if typ != "OK":
        raise RuntimeError("IMAP %s: %s %r" % (what, typ, data))
    return data


def server_mailboxes(c):
    """Raw (mUTF-7, as on the wire) names from LIST "" "*"."""
    typ, data = c.list('""', '"*"')
    imap_ok((typ, data), "LIST")
    names = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):  # name sent as a literal
            names.append(item[1].decode())
            continue
        line = item.decode()
        m = re.match(r'^\([^)]*\) (?:NIL|"(?:[^"\\]|\\.)*") (.*)$', line)
        if not m:
            raise RuntimeError("cannot parse LIST line %r" % line)
        n = m.group(1)
        if n.startswith('"'):
            n = re.sub(r'\\(.)', r'\1', n[1:-1])
        names.append(n)
    return set(names)


def examine(c, name):
    """EXAMINE a mailbox given by decoded name; returns the message count."""
    data = imap_ok(c.select(qmbox(name), readonly=True), "EXAMINE %s" % name)
    return int(data[0])


def _parse_internaldate(s):
    s = s.strip()
    t = time.strptime(s[:-6].strip(), "%d-%b-%Y %H:%M:%S")
    sign = 1 if s[-5] == "+" else -1
    off = sign * (int(s[-4:-2]) * 3600 + int(s[-2:]) * 60)
    return calendar.timegm(t) - off


def _parse_fetch_head(head):
    h = head.decode(errors="replace")
    info = {}
    m = re.search(r"UID (\d+)", h)
    info["uid"] = int(m.group(1)) if m else None
    m = re.search(r"FLAGS \(([^)]*)\)", h)
    info["flags"] = set(m.group(1).split()) - {"\\Recent"} if m else None
    m = re.search(r'INTERNALDATE "([^"]+)"', h)
    info["internaldate"] = _parse_internaldate(m.group(1)) if m else None
    m = re.search(r"RFC822\.SIZE (\d+)", h)
    info["size"] = int(m.group(1)) if m else None
    return info


def server_messages(c, name, bodies=True, uids="1:*"):
    """{uid: {uid, flags (set, without \\Recent), internaldate (epoch),
    size, body}} of mailbox `name` (decoded), by UID FETCH on a fresh EXAMINE."""
    n = examine(c, name)
    if n == 0:
        return {}
    items = "(UID FLAGS INTERNALDATE RFC822.SIZE%s)" % (" BODY.PEEK[]" if bodies else "")
    data = imap_ok(c.uid("FETCH", uids, items), "UID FETCH")
    out = {}
    for item in data:
        if isinstance(item, tuple):
            info = _parse_fetch_head(item[0])
            info["body"] = item[1]
        elif isinstance(item, bytes) and item != b")":
            info = _parse_fetch_head(item)
        else:
            continue
        if info["uid"] is not None:
            out[info["uid"]] = info
    return out


def server_uids(c, name):
    if examine(c, name) == 0:
        return []
    data = imap_ok(c.uid("SEARCH", None, "ALL"), "UID SEARCH")
    return sorted(int(x) for x in data[0].split())


def server_flags(c, name, uid):
    msgs = server_messages(c, name, bodies=False, uids=str(uid))
    return msgs[uid]["flags"] if uid in msgs else None


def server_find(c, name, message_id):
    """UIDs in mailbox `name` whose Message-ID header is message_id."""
    if examine(c, name) == 0:
        return []
    data = imap_ok(c.uid("SEARCH", None, "HEADER", "Message-ID", qstr(message_id)),
                   "UID SEARCH HEADER")
    return sorted(int(x) for x in data[0].split())


def append(c, name, data, flags="", date=None):
    """APPEND with the independent client; returns the new UID (APPENDUID)."""
    typ, resp = c.append(qmbox(name), "(%s)" % flags if flags else None, date, data)
    if typ != "OK":
        raise RuntimeError("APPEND to %s: %s %r" % (name, typ, resp))
    m = re.search(rb"APPENDUID \d+ (\d+)", resp[0])
    return int(m.group(1))


def create(c, name, exist_ok=False):
    typ, data = c.create(qmbox(name))
    if typ != "OK" and not (exist_ok and b"ALREADYEXISTS" in data[0]):
        raise RuntimeError("IMAP CREATE %s: %s %r" % (name, typ, data))


def store(c, name, uid, op, flags):
    imap_ok(c.select(qmbox(name)), "SELECT %s" % name)
    imap_ok(c.uid("STORE", str(uid), op, "(%s)" % flags), "UID STORE")
    # never CLOSE here: it would expunge the \Deleted messages


# --- the mount -------------------------------------------------------------------

def mbox_dir(m, name):
    """The directory of a mailbox (decoded name, '/' hierarchy) in the mount.
    Only for names that need no escaping (see fs/names_i.h)."""
    return os.path.join(m.path, *name.split("/"))


def msg_path(m, name, uid):
    return os.path.join(mbox_dir(m, name), "%d.eml" % uid)


def listing(path):
    return sorted(os.listdir(path))


def eml_uids(names):
    return sorted(int(n[:-4]) for n in names if re.fullmatch(r"[1-9][0-9]*\.eml", n))


def xflags(path):
    """user.imap.flags through the mount as a set (\\Recent dropped); an
    absent attribute (ENODATA) reads as the empty set."""
    try:
        v = os.getxattr(path, "user.imap.flags")
    except OSError as e:
        if e.errno == errno.ENODATA:
            return set()
        raise
    return set(v.rstrip(b"\0").decode().split()) - {"\\Recent"}


def fmt(s):
    return "{%s}" % " ".join(sorted(s)) if isinstance(s, (set, frozenset)) else repr(s)


def mount(dc, *opts):
    """An Imapfs context manager with a 1 s refresh (so set-up data written by
    the independent client shows up) and the given extra options."""
    return Imapfs(dc, opts=["-o", "refresh=1"] + list(opts))


def wait_listed(path, names, timeout=OTHER_CLIENT_WAIT):
    """Wait until every name in `names` is in the listing of path (set-up data
    written by the independent client); returns the listing."""
    def have():
        try:
            got = set(os.listdir(path))
        except OSError:
            return None
        return got if set(names) <= got else None
    return wait_until(have, timeout)


def wait_dir(path, timeout=OTHER_CLIENT_WAIT):
    """Wait until a mailbox directory made by the independent client shows."""
    return wait_until(lambda: os.path.isdir(path), timeout)


def staging_dir():
    """A local temp folder (not in the mount) for source files."""
    import tempfile
    from harness import tmp_root
    return tempfile.mkdtemp(prefix="writetests.", dir=tmp_root())


class Writer:
    """A child process that creates a file, writes data, then waits for the
    word to close it, so that the parent can act (stop Dovecot) between the
    last write and close() and a hanging close() cannot hang the test."""

    CODE = r"""
import os, sys
path, src = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
except OSError as e:
    print("open/write failed errno %d %s" % (e.errno, e), flush=True)
    sys.exit(2)
print("written", flush=True)
sys.stdin.readline()
try:
    os.close(fd)
except OSError as e:
    print("close errno %d %s" % (e.errno, e), flush=True)
    sys.exit(1)
print("close ok", flush=True)
"""

    def __init__(self, path, data, tmpdir):
        self.src = os.path.join(tmpdir, "writer.%s" % secrets.token_hex(4))
        with open(self.src, "wb") as f:
            f.write(data)
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, path, self.src],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.first = self._line(30)

    def _line(self, timeout):
        box = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return box[0].strip() if box else "TIMEOUT"

    def close(self, timeout=120):
        """Tell the child to close; returns its last line ("close ok",
        "close errno N ...", or "TIMEOUT")."""
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        line = self._line(timeout)
        if line == "TIMEOUT":
            self.proc.kill()
        self.proc.wait()
        os.unlink(self.src)
        return line


# --- running -----------------------------------------------------------------------

def main(tests, corpus=False, doc=""):
    """Run the test functions (each gets the Dovecot instance) and exit."""
    if doc:
        print(doc.strip().splitlines()[0])
    binary = os.path.join(build_dir(), "fs", "imapfs")
    if not os.access(binary, os.X_OK):
        print("FAIL: no imapfs daemon at %s (build fs/imapfs first); nothing was checked"
              % binary)
        sys.exit(1)
    start = time.monotonic()
    try:
        with Dovecot(corpus=corpus) as dc:
            print("dovecot: %s imaps port %d (%s)" % (dc.host, dc.imaps_port, dc.dir))
            for t in tests:
                R.current = t.__name__
                print("=== %s" % t.__name__)
                t0 = time.monotonic()
                try:
                    t(dc)
                except Abort as e:
                    print("  (%s stopped: %s)" % (t.__name__, e))
                except Exception as e:  # report, go on with the next test
                    R.failures += 1
                    if t.__name__ not in R.failed_tests:
                        R.failed_tests.append(t.__name__)
                    tb = traceback.extract_tb(e.__traceback__)
                    here = [f for f in tb if os.path.basename(f.filename).startswith("test_write")
                            and not f.filename.endswith("test_write_lib.py")] or tb
                    where = ", ".join("%s:%d" % (os.path.basename(f.filename), f.lineno)
                                      for f in here[-2:])
                    print("FAIL: %s raised %s: %s (at %s)"
                          % (t.__name__, type(e).__name__, e, where))
                print("  (%s: %.1f s)" % (t.__name__, time.monotonic() - t0))
    except Exception as e:
        print("FAIL: private Dovecot could not be started or stopped: %s: %s"
              % (type(e).__name__, e))
        R.failures += 1
    print("%d checks, %d failed%s, %.1f s" % (
        R.checks, R.failures,
        (" (in %s)" % ", ".join(R.failed_tests)) if R.failed_tests else "",
        time.monotonic() - start))
    print("FAIL" if R.failures else "PASS")
    sys.exit(1 if R.failures else 0)


if __name__ == "__main__":
    print("test_write_lib.py holds helpers for the test_write_*.py scripts; nothing to run")
