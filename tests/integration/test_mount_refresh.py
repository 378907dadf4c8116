#!/usr/bin/env python3
"""Changes made by another client show up within the refresh interval: a
message appended appears (and reads the server's bytes), one expunged
disappears from the listing and from lookups, a flag change shows in
user.imap.flags; several rounds in a row keep matching the server; a
mailbox deleted and created again (new UIDVALIDITY) shows its new messages,
not the old pages."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, Imapfs, check  # noqa: E402
from test_mount_lib import eml_uids, read_file, server_bodies, server_meta, wait_for  # noqa: E402


def msg(i):
    return ("From: refresh@example.org\r\nSubject: refresh %d\r\n"
            "Message-ID: <refresh-%d@example.org>\r\n\r\nbody %d\r\n" % (i, i, i)).encode()


def main():
    with Dovecot() as dc:
        c = dc.client()
        for i in range(1, 11):
            c.append("INBOX", None, None, msg(i))
        with Imapfs(dc, opts=["-o", "refresh=1"]) as m:
            inbox = os.path.join(m.path, "INBOX")
            check(eml_uids(inbox) == list(range(1, 11)), "INBOX lists UIDs 1..10")
            first = read_file(os.path.join(inbox, "3.eml"))
            check(first == msg(3), "3.eml reads its bytes")

            # another client appends one and expunges one
            c.append("INBOX", None, None, msg(11))
            c.select("INBOX")
            c.uid("STORE", "3", "+FLAGS.SILENT", "(\\Deleted)")
            c.expunge()
            c.uid("STORE", "5", "+FLAGS.SILENT", "(\\Flagged $Seen2)")
            wait_for("11.eml appears", lambda: 11 in eml_uids(inbox))
            check(True, "a message appended by another client appears")
            wait_for("3.eml disappears", lambda: 3 not in eml_uids(inbox))
            check(True, "a message expunged by another client disappears from the listing")
            check(not os.path.exists(os.path.join(inbox, "3.eml")),
                  "and from lookups (the kernel forgot its entry)")
            check(read_file(os.path.join(inbox, "11.eml")) == server_bodies(c, "INBOX", "11")[11],
                  "the new message reads the server's bytes")
            wait_for("flags of 5.eml change",
                     lambda: set(os.getxattr(os.path.join(inbox, "5.eml"),
                                             "user.imap.flags").decode().split())
                     == {"\\Flagged", "$Seen2"})
            check(True, "a flag change shows in user.imap.flags")

            # several rounds: the incremental path keeps matching the server
            for rnd in range(3):
                c.append("INBOX", None, None, msg(100 + rnd))
                c.select("INBOX")
                victim = eml_uids(inbox)[0]
                c.uid("STORE", str(victim), "+FLAGS.SILENT", "(\\Deleted)")
                c.expunge()
                expected = sorted(server_meta(c, "INBOX"))
                wait_for("round %d matches the server" % rnd,
                         lambda: eml_uids(inbox) == expected)
                check(True, "round %d: listing == server UIDs %s" % (rnd, expected))

            # a mailbox deleted and created again: new UIDVALIDITY, same UIDs,
            # other messages; the kernel's cached pages must not survive
            c.create("Again")
            c.append("Again", None, None, msg(500))
            again = os.path.join(m.path, "Again")
            wait_for("Again appears", lambda: os.path.isdir(again) and eml_uids(again) == [1])
            check(read_file(os.path.join(again, "1.eml")) == msg(500), "Again/1.eml: first message")
            c.select("INBOX")
            c.delete("Again")
            c.create("Again")
            c.append("Again", None, None, msg(600))
            wait_for("Again/1.eml is the new message",
                     lambda: os.path.isdir(again) and eml_uids(again) == [1]
                     and read_file(os.path.join(again, "1.eml")) == msg(600))
            check(True, "after a new UIDVALIDITY, 1.eml reads the new message (no stale pages)")
            check(os.stat(os.path.join(again, "1.eml")).st_size == len(msg(600)),
                  "and its size is the new one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
