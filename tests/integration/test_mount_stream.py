#!/usr/bin/env python3
"""The first listing of a mailbox is readable while it arrives: a cold
`ls -l` of a big mailbox lists entries as the server sends them instead of
after the whole answer is stored. The daemon is slowed down between batches
(IMAPFS_TEST_LISTING_DELAY_MS, a test hook) so the directory is certainly
read mid-listing; the -d trace must show that it was. What is listed then
(names, sizes, dates, with no entry twice or missing, across many getdents
calls) must equal what an independent client sees on the server, and so
must every later listing."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, Imapfs, check  # noqa: E402
from test_mount_lib import server_meta  # noqa: E402


def scan(path):
    """name -> (size, mtime) with lstat from readdirplus, in listing order."""
    names = []
    attrs = {}
    with os.scandir(path) as it:
        for e in it:
            names.append(e.name)
            st = e.stat(follow_symlinks=False)
            attrs[e.name] = (st.st_size, int(st.st_mtime))
    return names, attrs


def main():
    os.environ["IMAPFS_TEST_LISTING_DELAY_MS"] = "60"
    with Dovecot(corpus=True) as dc:
        c = dc.client()
        meta = server_meta(c, "INBOX")
        check(len(meta) > 2000, "INBOX has %d messages on the server" % len(meta))
        expected = {"%d.eml" % uid: (size, date) for uid, (_, size, date) in meta.items()}
        with Imapfs(dc, opts=["-d"]) as m:
            inbox = os.path.join(m.path, "INBOX")
            names, attrs = scan(inbox)
            # at once, before the listing is stored (the hook holds it back
            # for 10 x the delay): files listed from the stream are usable
            first = os.path.join(inbox, sorted(names)[0])
            check(os.path.getsize(first) == expected[sorted(names)[0]][0],
                  "a message listed mid-stream: stat at once gives its size")
            check(os.getxattr(first, "user.imap.flags") is not None,
                  "its user.imap.flags can be read at once")
            with open(first, "rb") as f:
                check(len(f.read()) == expected[sorted(names)[0]][0],
                      "and it reads its whole size at once")
            log = m.stderr()
            check("INBOX: listing it while it arrives" in log,
                  "INBOX was listed while its first listing arrived (trace)")
            check(len(names) == len(set(names)), "no entry listed twice (%d entries)" % len(names))
            check(set(names) == set(expected),
                  "the streamed listing has exactly the server's UIDs (%d)" % len(expected))
            check(attrs == expected, "sizes and dates of every entry match RFC822.SIZE and "
                  "INTERNALDATE")
            names2, attrs2 = scan(inbox)
            check(set(names2) == set(expected) and attrs2 == expected,
                  "the stored listing afterwards is the same")
    return 0


if __name__ == "__main__":
    sys.exit(main())
