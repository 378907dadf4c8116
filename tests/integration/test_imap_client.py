#!/usr/bin/env python3
"""The IMAP client library (imap/) against a real private Dovecot with the
corpus, driven by tests/integration/imap-probe and checked with an
independent client (python's imaplib) and the server's log:

- login over implicit TLS and STARTTLS with the instance CA; without the CA
  certificate verification fails and the server log shows no login attempt
  (no credentials sent); a wrong password is an AUTH error;
- LIST names, SELECT/STATUS numbers, bulk UID FETCH metadata (every UID and
  RFC822.SIZE) and bodies (every byte, by SHA-256) match what Dovecot
  holds, and BODY.PEEK leaves messages unseen;
- APPEND gives back the APPENDUID and the same bytes; partial fetch; STORE,
  COPY, MOVE, EXPUNGE, CREATE/RENAME/DELETE of awkward names, as imaplib
  sees them;
- the protocol trace shows no credentials.
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, build_dir, check, corpus_manifest  # noqa: E402

PROBE = os.path.join(build_dir(), "tests", "integration", "imap-probe")


def probe(dc, *cmds, tls="implicit", cafile=True, password_file=None, trace=False,
          expect_rc=(0,)):
    port = dc.imaps_port if tls == "implicit" else dc.imap_port
    args = [PROBE, "--host", dc.host, "--port", str(port), "--tls", tls, "--user", dc.user,
            "--password-file", password_file or dc.password_file, "--timeout", "30000"]
    if cafile:
        args += ["--cafile", dc.cafile]
    if trace:
        args += ["--trace"]
    r = subprocess.run(args + list(cmds), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=240)
    out = r.stdout.decode("utf-8", "surrogateescape")
    if r.returncode not in expect_rc:
        sys.stderr.write(r.stderr.decode(errors="replace")[-3000:])
        raise AssertionError("imap-probe %s: exit %d\n%s" % (" ".join(cmds), r.returncode,
                                                             out[-3000:]))
    return out, r.stderr.decode("utf-8", "replace")


def imap_quote(name):
    return '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')


def imaplib_list(c):
    typ, data = c.list()
    assert typ == "OK", data
    names = set()
    for line in data:
        if isinstance(line, tuple):  # name sent as a literal
            names.add(line[1].decode())
            continue
        m = re.match(rb'\((.*?)\) (?:"(.)"|NIL) (.*)$', line)
        assert m, line
        name = m.group(3)
        if name.startswith(b'"'):
            name = re.sub(rb'\\(.)', rb'\1', name[1:-1])
        names.add(name.decode())
    return names


def imaplib_select(c, mailbox):
    typ, data = c.select(imap_quote(mailbox), readonly=True)
    assert typ == "OK", (mailbox, data)
    exists = int(data[0])
    uidvalidity = int(c.untagged_responses["UIDVALIDITY"][0])
    uidnext = int(c.untagged_responses["UIDNEXT"][0])
    return exists, uidvalidity, uidnext


def imaplib_sizes(c):
    typ, data = c.uid("FETCH", "1:*", "(UID RFC822.SIZE FLAGS)")
    assert typ == "OK", data
    sizes, flags = {}, {}
    for line in data:
        if line is None:
            continue
        m = re.search(rb"UID (\d+)", line)
        s = re.search(rb"RFC822\.SIZE (\d+)", line)
        f = re.search(rb"FLAGS \(([^)]*)\)", line)
        sizes[int(m.group(1))] = int(s.group(1))
        flags[int(m.group(1))] = f.group(1).decode()
    return sizes, flags


def imaplib_bodies(c, uid_set="1:*"):
    typ, data = c.uid("FETCH", uid_set, "(UID BODY.PEEK[])")
    assert typ == "OK", data
    bodies = {}
    for part in data:
        if isinstance(part, tuple):
            uid = int(re.search(rb"UID (\d+)", part[0]).group(1))
            bodies[uid] = part[1]
    return bodies


def lines(out, word):
    return [ln.split(" ", 1)[1] if " " in ln else "" for ln in out.splitlines()
            if ln.split(" ", 1)[0] == word]


def check_login(dc):
    out, _ = probe(dc, "noop")
    check("OPEN ok" in out and "NOOP ok" in out, "login over implicit TLS with the test CA")
    out, _ = probe(dc, "noop", tls="starttls")
    check("OPEN ok" in out and "NOOP ok" in out, "login over STARTTLS with the test CA")

    for tls in ("implicit", "starttls"):
        with open(dc.log, errors="replace") as f:
            before = len(f.readlines())
        out, _ = probe(dc, "noop", tls=tls, cafile=False, expect_rc=(1,))
        check(out.startswith("ERROR TLS") and "certificate" in out,
              "%s without the CA: certificate check fails (%s)" % (tls, out.strip()))
        with open(dc.log, errors="replace") as f:
            new = f.readlines()[before:]
        check(not any("Login:" in ln or "auth failed" in ln for ln in new),
              "%s without the CA: the server log shows no login attempt" % tls)
        for ln in new:
            if "Disconnected" in ln:
                check("no auth attempts" in ln,
                      "%s: server saw no auth attempt: %s" % (tls, ln.strip()[-90:]))

    with tempfile.NamedTemporaryFile("w", suffix=".pw") as pw:
        pw.write("wrong-password\n")
        pw.flush()
        out, _ = probe(dc, "noop", password_file=pw.name, expect_rc=(1,))
    check(out.startswith("ERROR AUTH"), "a wrong password is an AUTH error (%s)" % out.strip())

    out, err = probe(dc, "noop", trace=True)
    check("LOGIN <redacted> <redacted>" in err, "the trace shows LOGIN <redacted> <redacted>")
    check(dc.password not in err and dc.password not in out, "the trace never shows the password")


def check_corpus(dc, c):
    manifest = corpus_manifest()
    out, _ = probe(dc, "list")
    names = {ln.split(" ", 2)[2] for ln in lines(out, "LIST")}
    check(names == imaplib_list(c), "LIST gives the %d mailboxes imaplib sees" % len(names))
    for mailbox in manifest:
        check(mailbox in names, "LIST has corpus mailbox %s" % mailbox)

    total_msgs = total_bytes = 0
    for mailbox, files in manifest.items():
        exists, uidvalidity, uidnext = imaplib_select(c, mailbox)
        sizes, flags_before = imaplib_sizes(c)
        out, _ = probe(dc, "examine", mailbox, "meta", "1:*", "0", "search", "status", mailbox,
                       "bodies", "1:*", "0", "0")
        sel = dict(kv.split("=", 1) for kv in lines(out, "SELECT")[0].split(" ")[:5])
        check(int(sel["exists"]) == exists == len(files) and int(sel["uidvalidity"]) == uidvalidity
              and int(sel["uidnext"]) == uidnext and sel["ro"] == "1",
              "%s: EXAMINE exists=%s uidvalidity=%s uidnext=%s as imaplib"
              % (mailbox, sel["exists"], sel["uidvalidity"], sel["uidnext"]))
        check(int(sel["highestmodseq"]) > 0, "%s: CONDSTORE HIGHESTMODSEQ reported" % mailbox)
        meta = {}
        for ln in lines(out, "META"):
            kv = dict(x.split("=", 1) for x in ln.split(" ")[:5])
            meta[int(kv["uid"])] = int(kv["size"])
        check(meta == sizes, "%s: bulk UID FETCH gives all %d UIDs with imaplib's RFC822.SIZE"
              % (mailbox, len(sizes)))
        n, first, last = (int(x) for x in lines(out, "SEARCH")[0].split())
        check(n == len(sizes) and first == min(sizes) and last == max(sizes),
              "%s: UID SEARCH ALL gives %d UIDs %d..%d" % (mailbox, n, first, last))
        st = dict(kv.split("=", 1) for kv in lines(out, "STATUS")[0].split(" "))
        check(int(st["messages"]) == exists and int(st["uidnext"]) == uidnext
              and int(st["uidvalidity"]) == uidvalidity, "%s: STATUS as imaplib" % mailbox)

        bodies = imaplib_bodies(c)
        got = {}
        for ln in lines(out, "BODY"):
            uid, off, size, digest = ln.split(" ")
            got[int(uid)] = (int(size), digest)
        want = {u: (len(b), hashlib.sha256(b).hexdigest()) for u, b in bodies.items()}
        check(got == want, "%s: bulk BODY.PEEK[] streams all %d bodies byte for byte (%d bytes)"
              % (mailbox, len(want), sum(s for s, _ in want.values())))
        check(lines(out, "BODYCOUNT")[0].split()[0] == str(len(want)), "%s: BODYCOUNT" % mailbox)
        _, flags_after = imaplib_sizes(c)
        check(flags_after == flags_before, "%s: BODY.PEEK left every flag as it was" % mailbox)
        total_msgs += len(want)
        total_bytes += sum(s for s, _ in want.values())
    print("corpus: %d messages, %d bytes fetched" % (total_msgs, total_bytes))


def check_writes(dc, c):
    msg = (b"From: probe@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"
           b"* OK not a response\r\n+ not a continuation\r\nA0001 OK nor a reply\r\n"
           b"8-bit: \xc3\xa9\xff\x80\r\n" + b"x" * 70000 + b"\r\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "msg.eml")
        with open(path, "wb") as f:
            f.write(msg)
        out, _ = probe(dc, "append", "INBOX", path, "\\Seen $Probe")
        v, u = (int(x) for x in lines(out, "APPENDUID")[0].split())
        _, uidvalidity, uidnext = imaplib_select(c, "INBOX")
        check(v == uidvalidity and u == uidnext - 1,
              "APPEND: APPENDUID %d %d matches the server's UIDVALIDITY and new UID" % (v, u))
        check(imaplib_bodies(c, str(u)).get(u) == msg,
              "APPEND: imaplib reads back the same %d bytes" % len(msg))
        _, flags = imaplib_sizes(c)
        check(set(flags[u].split()) >= {"\\Seen", "$Probe"}, "APPEND: flags \\Seen $Probe set")

        back = os.path.join(tmp, "back.eml")
        out, _ = probe(dc, "examine", "INBOX", "body", str(u), back, "bodies", str(u), "100", "50")
        with open(back, "rb") as f:
            check(f.read() == msg, "fetch of the appended UID gives identical bytes")
        part = lines(out, "BODY")[-1].split(" ")
        check(part[1:3] == ["100", "50"]
              and part[3] == hashlib.sha256(msg[100:150]).hexdigest(),
              "partial fetch BODY.PEEK[]<100.50> gives bytes 100..149")

    # awkward names: spaces, quotes, backslash, mUTF-7 (the caller encodes)
    box = 'Probe "q" \\b &AOQ-'
    box2 = "Probe renamed"
    out, _ = probe(dc, "create", box, "select", "INBOX",
                   "store", str(u), "-", "$Probe", "store", str(u), "+", "\\Flagged",
                   "copy", str(u), box, "move", str(u), box, "search",
                   "rename", box, box2)
    check("create ok" in out and "rename ok" in out, "CREATE and RENAME of %r" % box)
    copies = [ln.split() for ln in lines(out, "COPYUID")]
    check(len(copies) == 2 and copies[0][1] != copies[1][1], "COPY and MOVE give COPYUIDs %s"
          % copies)
    names = imaplib_list(c)
    check(box2 in names and box not in names, "imaplib sees the renamed mailbox")
    exists, _, _ = imaplib_select(c, box2)
    sizes, flags = imaplib_sizes(c)
    check(exists == 2 and sorted(sizes) == sorted(int(x[1]) for x in copies),
          "the copy and the moved message are in %r" % box2)
    check(all("\\Flagged" in f and "$Probe" not in f for f in flags.values()),
          "STORE: +\\Flagged and -$Probe applied")
    exists, _, _ = imaplib_select(c, "INBOX")
    inbox_sizes, _ = imaplib_sizes(c)
    check(u not in inbox_sizes, "MOVE removed UID %d from INBOX" % u)

    out, _ = probe(dc, "select", box2, "store", "1:*", "+", "\\Deleted", "expunge",
                   str(min(sizes)), "search", "unselect", "delete", box2)
    check(lines(out, "SEARCH")[0].split()[0] == "1", "UID EXPUNGE removed exactly one message")
    check(box2 not in imaplib_list(c), "DELETE removed %r" % box2)
    out, _ = probe(dc, "delete", "No such box", expect_rc=(3,))
    check("ERROR NO code=NONEXISTENT" in out, "DELETE of a missing mailbox: NO [NONEXISTENT]")


def main():
    if not os.access(PROBE, os.X_OK):
        raise SystemExit("no %s (build first)" % PROBE)
    with Dovecot(corpus=True) as dc:
        c = dc.client()
        check_login(dc)
        check_corpus(dc, c)
        check_writes(dc, c)
    print("PASS")


if __name__ == "__main__":
    main()
