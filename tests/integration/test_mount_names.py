#!/usr/bin/env python3
"""Mailboxes with non-ASCII and special names, created on the server by an
independent client, appear under their UTF-8 names (decoded from modified
UTF-7), nested where the hierarchy says, and can be listed and read; a
name part that cannot be a file name is escaped reversibly."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, Imapfs, check  # noqa: E402
from test_mount_lib import eml_uids, mutf7_encode, quote, read_file, server_bodies  # noqa: E402

NAMES = ["Entwürfe", "日本語", "a&b", "Ordner/Unterordner ä", "100%", "12.eml", "x y"]
# what imapfs shows: '%' is the escape character, "12.eml" would pass for a message
SHOWN = {"100%": "100%25", "12.eml": "%312.eml"}


def message(i, name):
    return ("From: names@example.org\r\nSubject: =?UTF-8?B?dGVzdA==?= %d\r\n"
            "Message-ID: <names-%d@example.org>\r\n\r\nin %s\r\n" % (i, i, name)).encode()


def main():
    with Dovecot() as dc:
        c = dc.client()
        for i, name in enumerate(NAMES):
            typ, data = c.create(quote(mutf7_encode(name)))
            check(typ == "OK", "server: CREATE %s as %s" % (name, mutf7_encode(name)))
            for j in range(2):
                typ, data = c.append(quote(mutf7_encode(name)), None, None,
                                     message(i * 10 + j, name))
                check(typ == "OK", "server: APPEND to %s" % name)
        with Imapfs(dc, opts=["-o", "refresh=1"]) as m:
            top = set(os.listdir(m.path))
            print("root:", sorted(top))
            for name in NAMES:
                parts = [SHOWN.get(p, p) for p in name.split("/")]
                path = os.path.join(m.path, *parts)
                check(parts[0] in top and os.path.isdir(path),
                      "%r appears as %s" % (name, "/".join(parts)))
                uids = eml_uids(path)
                check(len(uids) == 2, "%s lists 2 messages" % name)
                bodies = server_bodies(c, mutf7_encode(name))
                for uid in uids:
                    check(read_file(os.path.join(path, "%d.eml" % uid)) == bodies[uid],
                          "%s/%d.eml reads the server's bytes" % (name, uid))
            st = os.statvfs(m.path)
            check(st.f_bavail * st.f_frsize >= 1 << 40,
                  "statvfs: a server without QUOTA: plenty free (%d GiB), so copying in "
                  "is not refused" % (st.f_bavail * st.f_frsize >> 30))
            check(os.stat(os.path.join(m.path, "Ordner")).st_nlink == 3,
                  "Ordner has one subdirectory: st_nlink 3")
            check(not os.path.exists(os.path.join(m.path, "12.eml", "x")),
                  "no confusion between a mailbox named 12.eml and a message")
            # a mailbox created while mounted shows up within the refresh interval
            c.create(quote(mutf7_encode("Neu ñ")))
            from test_mount_lib import wait_for
            wait_for("a new mailbox appears", lambda: "Neu ñ" in os.listdir(m.path))
            check(True, "a mailbox created on the server appears")
    return 0


if __name__ == "__main__":
    sys.exit(main())
