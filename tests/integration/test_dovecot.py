#!/usr/bin/env python3
"""Proves the harness: a private Dovecot with the corpus, reached over
implicit TLS and STARTTLS with certificate verification, serves exactly the
corpus (counts per mailbox, bytes of messages), refuses clients that do not
trust its CA, survives stop/start with the same ports and mail, and runs
beside a second instance."""

import imaplib
import os
import re
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, check, corpus_manifest, corpus_message  # noqa: E402


def select_count(c, mailbox):
    typ, data = c.select('"%s"' % mailbox, readonly=True)
    assert typ == "OK", (mailbox, data)
    return int(data[0])


def fetch_body(c, uid):
    typ, data = c.uid("FETCH", str(uid), "(FLAGS BODY.PEEK[])")
    assert typ == "OK", data
    parts = [d for d in data if isinstance(d, tuple)]
    assert len(parts) == 1, data
    return parts[0][0], parts[0][1]


def check_mailboxes(dc, c, how):
    manifest = corpus_manifest()
    for mailbox, files in manifest.items():
        check(select_count(c, mailbox) == len(files),
              "%s: %s has %d messages like the corpus" % (how, mailbox, len(files)))
        check(dc.message_count(mailbox) == len(files),
              "doveadm: %s has %d messages" % (mailbox, len(files)))
        for uid in sorted({1, len(files) // 2, len(files)}):
            head, body = fetch_body(c, uid)
            check(body == corpus_message(files[uid - 1]),
                  "%s: %s UID %d BODY.PEEK[] is %s with CRLF (%d bytes)"
                  % (how, mailbox, uid, os.path.basename(files[uid - 1]), len(body)))
            check(b"\\Seen" not in head, "%s: BODY.PEEK left %s UID %d unseen"
                  % (how, mailbox, uid))


def check_untrusted(dc):
    # The system trust store does not know the instance's fresh CA.
    ctx = ssl.create_default_context()
    try:
        with socket.create_connection((dc.host, dc.imaps_port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname=dc.host):
                pass
        verified = True
    except ssl.SSLCertVerificationError as e:
        verified = False
        print("  (%s)" % e.verify_message)
    check(not verified, "a client without the instance CA fails verification")
    # With the CA but the wrong name, the hostname check fails.
    ctx = dc.ssl_context()
    try:
        with socket.create_connection((dc.host, dc.imaps_port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="imap.example.org"):
                pass
        verified = True
    except ssl.SSLCertVerificationError:
        verified = False
    check(not verified, "the certificate does not verify for another host name")
    with socket.create_connection((dc.host, dc.imaps_port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            check(t.version() in ("TLSv1.2", "TLSv1.3"),
                  "the certificate verifies for localhost too (%s)" % t.version())


def main():
    manifest = corpus_manifest()
    total = sum(len(v) for v in manifest.values())
    check(total > 5000, "the corpus manifest lists %d messages" % total)
    with Dovecot(corpus=True) as dc:
        check(oct(os.stat(dc.password_file).st_mode & 0o777) == "0o600",
              "the password file is 0600")
        c = dc.client()
        check(c.sock.version() in ("TLSv1.2", "TLSv1.3"), "implicit TLS: %s" % c.sock.version())
        typ, caps = c.capability()
        caps = caps[0].decode().split()
        for cap in ("CONDSTORE", "QRESYNC", "UIDPLUS", "MOVE", "IDLE", "LITERAL+"):
            check(cap in caps, "capability %s offered" % cap)
        typ, lst = c.list()
        check(all(b'"/"' in entry for entry in lst), "the hierarchy delimiter is /")
        check_mailboxes(dc, c, "implicit TLS")
        c.select("INBOX", readonly=True)
        typ, data = c.uid("FETCH", "1:*", "INTERNALDATE")
        dates = [re.search(rb'INTERNALDATE "([^"]+)"', d).group(1) for d in data]
        check(len(dates) == len(manifest["INBOX"]) and len(set(dates)) == len(dates),
              "every INBOX message has a distinct INTERNALDATE (%s .. %s)"
              % (min(dates).decode(), max(dates).decode()))

        plain = imaplib.IMAP4(dc.host, dc.imap_port, timeout=30)
        check("STARTTLS" in plain.capabilities,
              "the plain port offers STARTTLS: %s" % " ".join(plain.capabilities))
        plain.logout()
        s = dc.client(starttls=True)
        check(s.sock.version() in ("TLSv1.2", "TLSv1.3"), "STARTTLS: %s" % s.sock.version())
        for mailbox, files in manifest.items():
            typ, data = s.status('"%s"' % mailbox, "(MESSAGES)")
            n = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
            check(n == len(files), "STARTTLS: STATUS %s MESSAGES %d" % (mailbox, n))
        check_untrusted(dc)

        ports = (dc.imaps_port, dc.imap_port)
        with Dovecot() as other:
            check((other.imaps_port, other.imap_port) != ports
                  and other.imaps_port not in ports and other.imap_port not in ports,
                  "a second instance runs beside the first on other ports")
            o = other.client()
            typ, data = o.select("INBOX", readonly=True)
            check(int(data[0]) == 0, "the second instance has its own (empty) INBOX")
        check(c.noop()[0] == "OK", "stopping the second instance leaves the first one's sessions")

        dc.stop()
        try:
            c.noop()
            cut = False
        except (imaplib.IMAP4.abort, OSError):
            cut = True
        check(cut, "stop() cuts a connection that was open (its imap process is gone)")
        try:
            socket.create_connection((dc.host, dc.imaps_port), timeout=5).close()
            up = True
        except OSError:
            up = False
        check(not up, "stop() closes the ports")
        dc.start()
        check((dc.imaps_port, dc.imap_port) == ports, "start() after stop() keeps the ports")
        c = dc.client()
        check(select_count(c, "INBOX") == len(manifest["INBOX"]),
              "the mail survives stop/start")
    print("PASS")


if __name__ == "__main__":
    main()
