#!/usr/bin/env python3
"""A look-ahead over a mailbox whose UIDs have holes (every other message
expunged) asks for up to 1,500 isolated UIDs at once: the daemon splits
such a fetch so that no UID FETCH command carries a UID set longer than
4,000 bytes (servers limit command lines, 8 KiB is common), and every file
still reads the server's bytes, with the fetches batched."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, Imapfs, check  # noqa: E402
from test_mount_lib import eml_uids, read_file, server_bodies  # noqa: E402

N = 2400
SET_MAX = 4000


def main():
    with Dovecot() as dc:
        c = dc.client()
        c.create("Sparse")
        for i in range(1, N + 1):
            c.append("Sparse", None, None, b"Subject: sparse %d\r\n\r\nbody %d\r\n" % (i, i))
        c.select("Sparse")
        even = list(range(2, N + 1, 2))
        for k in range(0, len(even), 200):
            typ, _ = c.uid("STORE", ",".join(map(str, even[k:k + 200])), "+FLAGS.SILENT",
                           "(\\Deleted)")
            assert typ == "OK"
        c.expunge()
        expected = server_bodies(c, "Sparse")
        check(sorted(expected) == list(range(1, N + 1, 2)),
              "the server holds the %d odd UIDs of 1..%d" % (N // 2, N))
        with Imapfs(dc, opts=["-d", "-o", "refresh=600"]) as m:
            box = os.path.join(m.path, "Sparse")
            check(eml_uids(box) == sorted(expected), "Sparse lists them")
            for uid in sorted(expected):  # UID order, as grep -r in a big directory
                if read_file(os.path.join(box, "%d.eml" % uid)) != expected[uid]:
                    raise AssertionError("%d.eml differs from the server" % uid)
            check(True, "all %d files read the server's bytes" % len(expected))
            # the -d trace cuts long command lines; the daemon logs each set's size
            sets = [int(n) for n in re.findall(r"Sparse: UID FETCH of \d+ bodies, a UID set "
                                               r"of (\d+) bytes", m.stderr())]
            check(sets, "the daemon logged its body fetches (-d)")
            longest = max(sets)
            print("  %d body fetches, longest UID set %d bytes" % (len(sets), longest))
            check(longest <= SET_MAX, "no UID FETCH set is over %d bytes (longest %d)"
                  % (SET_MAX, longest))
            check(len(sets) <= 12, "the %d reads took %d body fetches (batched)"
                  % (len(expected), len(sets)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
