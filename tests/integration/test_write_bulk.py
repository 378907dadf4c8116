#!/usr/bin/env python3
"""Write path, bulk: one `cp` of 1,000 corpus messages into an empty mailbox
succeeds; the server (independent imaplib client and doveadm) then holds
exactly those 1,000 messages, byte-identical after LF -> CRLF, and the mount
lists exactly the 1,000 <UID>.eml. The time is printed next to an imaplib
APPEND loop of the same messages (print only: no timing assert)."""

import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_write_lib import (append, corpus_files, create, crlf, listing, main, mbox_dir,  # noqa: E402
                            mount, need, note, ok, read_file, run, server_messages, wait_dir)

N = 1000


def test_cp_1000(dc):
    files = corpus_files(N, "INBOX")
    raws = [read_file(f) for f in files]
    want = collections.Counter(crlf(r) for r in raws)
    note("%d corpus files, %.1f MB" % (N, sum(len(r) for r in raws) / 1e6))
    c = dc.client()
    create(c, "Bulk")
    create(c, "BulkRef")
    with mount(dc) as m:
        d = mbox_dir(m, "Bulk")
        need(wait_dir(d), "set-up: the Bulk directory is there")
        t0 = time.monotonic()
        r = run(["cp"] + files + [d + "/"], timeout=240)
        t_cp = time.monotonic() - t0
        ok(r.returncode == 0 and not r.stderr, "cp of %d files into Bulk: exit 0, no message" % N,
           "exit %d, %d lines on stderr, the first ones:\n%s" % (
               r.returncode, len(r.stderr.splitlines()), "\n".join(r.stderr.splitlines()[:5])))
        n = dc.message_count("Bulk")
        ok(n == N, "doveadm: Bulk holds %d messages" % N, "it holds %d" % n)
        msgs = server_messages(c, "Bulk")
        got = collections.Counter(v["body"] for v in msgs.values())
        ok(got == want, "the server's %d messages are byte-identical to the files (LF -> CRLF), "
           "each exactly once" % N,
           "%d of the files missing or different, %d unexpected server messages"
           % (sum((want - got).values()), sum((got - want).values())))
        names = listing(d)
        ok(names == sorted("%d.eml" % u for u in msgs) and len(names) == N,
           "the mount lists exactly the server's %d <UID>.eml" % N,
           "%d names; not <UID>.eml of a server message: %s" % (
               len(names), [x for x in names if x not in {"%d.eml" % u for u in msgs}][:10]))

    t0 = time.monotonic()
    c2 = dc.client()
    for raw in raws:
        append(c2, "BulkRef", crlf(raw))
    t_ref = time.monotonic() - t0
    ok(dc.message_count("BulkRef") == N, "reference: imaplib APPENDed %d messages to BulkRef" % N)
    print("TIME cp of %d messages through imapfs: %.2f s; imaplib APPEND loop of the same: "
          "%.2f s (ratio %.1f)" % (N, t_cp, t_ref, t_cp / t_ref if t_ref else float("nan")))


if __name__ == "__main__":
    main([test_cp_1000], doc=__doc__)
