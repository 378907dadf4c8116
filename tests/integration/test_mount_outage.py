#!/usr/bin/env python3
"""A server that stops answering: a read ends with an error after the
timeout instead of hanging. Stopping Dovecot while mounted: reads of files
never read fail with an error; files read before still read; listings already seen
still list; after Dovecot is back, the files that failed read the server's
bytes without remounting (the lost connections are re-established)."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, Imapfs, check  # noqa: E402
from test_mount_lib import (eml_uids, read_file, server_bodies, signal_instance,  # noqa: E402
                            stop_dovecot_hard)

TIMEOUT = 5  # -o timeout: bound on any wait for the server


def msg(box, i):
    return ("From: outage@example.org\r\nSubject: %s %d\r\n\r\n%s\r\n"
            % (box, i, ("line %d\r\n" % i) * 50)).encode()


def try_read(path):
    start = time.monotonic()
    try:
        data = read_file(path)
        err = None
    except OSError as e:
        data, err = None, e
    return data, err, time.monotonic() - start


def main():
    with Dovecot() as dc:
        c = dc.client()
        c.create("Other")
        for i in range(1, 41):
            c.append("INBOX", None, None, msg("INBOX", i))
            c.append("Other", None, None, msg("Other", i))
        expected = {"INBOX": server_bodies(c, "INBOX"), "Other": server_bodies(c, "Other")}
        with Imapfs(dc, opts=["-o", "refresh=1", "-o", "timeout=%d" % TIMEOUT,
                              "-o", "connections=2"]) as m:
            inbox, other = os.path.join(m.path, "INBOX"), os.path.join(m.path, "Other")
            check(len(eml_uids(inbox)) == 40 and len(eml_uids(other)) == 40,
                  "both mailboxes list 40 messages")
            # read a few, far apart so no read-ahead pulls in the others
            cached = [1, 20, 40]
            for uid in cached:
                check(read_file(os.path.join(inbox, "%d.eml" % uid)) == expected["INBOX"][uid],
                      "INBOX/%d.eml read while the server is up" % uid)

            # a server that stops answering: reads end with an error, not a hang
            signal_instance(dc, signal.SIGSTOP)
            try:
                data, err, took = try_read(os.path.join(other, "15.eml"))
            finally:
                signal_instance(dc, signal.SIGCONT)
            print("  Other/15.eml: %s after %.2f s" % (err, took))
            check(data is None and err is not None,
                  "server frozen: reading uncached Other/15.eml ends with %s (-o timeout=%d)"
                  % (err and os.strerror(err.errno), TIMEOUT))

            stop_dovecot_hard(dc)
            time.sleep(1.5)  # let the listings age past refresh=1
            for uid in (7, 33):
                data, err, took = try_read(os.path.join(other, "%d.eml" % uid))
                print("  Other/%d.eml: %s after %.2f s" % (uid, err, took))
                check(data is None and err is not None,
                      "server down: reading uncached Other/%d.eml fails with %s"
                      % (uid, err and os.strerror(err.errno)))
            for uid in cached:
                check(read_file(os.path.join(inbox, "%d.eml" % uid)) == expected["INBOX"][uid],
                      "server down: cached INBOX/%d.eml still reads" % uid)
            check(eml_uids(inbox) == list(range(1, 41)),
                  "server down: the INBOX listing still lists (from the cache)")

            dc.start()
            deadline = time.monotonic() + 60
            while True:
                data, err, took = try_read(os.path.join(other, "7.eml"))
                if data is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            check(data == expected["Other"][7],
                  "server back: Other/7.eml reads the server's bytes without remounting")
            check(read_file(os.path.join(other, "33.eml")) == expected["Other"][33],
                  "server back: Other/33.eml too")
            # new mail after the restart is seen as well
            c2 = dc.client()
            c2.append("INBOX", None, None, msg("INBOX", 41))
            deadline = time.monotonic() + 30
            while 41 not in eml_uids(inbox) and time.monotonic() < deadline:
                time.sleep(0.2)
            check(41 in eml_uids(inbox), "server back: a new message appears")
    return 0


if __name__ == "__main__":
    sys.exit(main())
