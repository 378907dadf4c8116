#!/usr/bin/env python3
"""Write path, a full mailbox: with a Dovecot storage quota, df shows the
quota (GETQUOTAROOT) as size and free space; an APPEND the
server refuses with [OVERQUOTA] makes close() fail with EDQUOT and cp say
"Disk quota exceeded"; the bytes stay readable under their name (the
outbox) and nothing reaches the server; a small file that still fits is
appended. Once the quota is raised (Dovecot restarted), the kept files are
appended exactly once on later activity. Server side checked with an
independent imaplib client."""

import errno
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_write_lib import (create, crlf, main, mbox_dir, mount, need, new_message,  # noqa: E402
                            note, ok, read_file, run, server_find, server_messages, staging_dir,
                            wait_dir)

MARK = "# --- test_write_quota ---\n"
QUOTA_CONF = """mail_plugins = $mail_plugins quota
protocol imap {
  mail_plugins = $mail_plugins quota imap_quota
}
plugin {
  quota = maildir:User quota
  quota_rule = *:storage=%s
}
"""
REFUSED_RETRY_WAIT = 60.0  # a refused APPEND is retried after 30 s, on activity


def set_quota(dc, size):
    """Restart Dovecot with a storage quota of size (e.g. "64K")."""
    dc.stop()
    with open(dc.config) as f:
        conf = f.read().split(MARK)[0]
    with open(dc.config, "w") as f:
        f.write(conf + MARK + QUOTA_CONF % size)
    dc.start()


def test_over_quota(dc):
    c = dc.client()
    create(c, "Full")
    stage = staging_dir()
    big, big_mid = new_message("over-quota-cp", body="y" * 100 + "\n" + ("z" * 70 + "\n") * 1500)
    big2, big2_mid = new_message("over-quota-close", body=("w" * 70 + "\n") * 1500)
    small, small_mid = new_message("fits")
    src = os.path.join(stage, "big.eml")
    with open(src, "wb") as f:
        f.write(big)
    set_quota(dc, "64K")
    c = dc.client()  # the restart ended the first session
    used, _ = new_message("uses-quota", body=("u" * 70 + "\n") * 150)
    typ, _ = c.append("INBOX", None, None, crlf(used))
    need(typ == "OK", "set-up: a 10 KB message in INBOX uses part of the quota")
    with mount(dc) as m:
        d = mbox_dir(m, "Full")
        need(wait_dir(d), "set-up: the Full directory is there")

        # df: the quota as size and free space
        typ, data = c.getquotaroot("INBOX")
        need(typ == "OK", "server: GETQUOTAROOT INBOX (imap_quota)", str(data))
        quota = [x.decode() for x in data[1] if isinstance(x, bytes)]
        note("server: %s" % quota)
        used_kib, limit_kib = [int(x) for x in re.search(r"STORAGE (\d+) (\d+)", quota[0]).groups()]
        need(used_kib > 0, "set-up: the server counts some usage (%d KiB)" % used_kib)
        st = os.statvfs(m.path)
        ok(st.f_blocks * st.f_frsize == limit_kib * 1024,
           "statvfs: the size is the quota (%d KiB)" % limit_kib,
           "%d blocks of %d" % (st.f_blocks, st.f_frsize))
        ok(st.f_bavail * st.f_frsize == (limit_kib - used_kib) * 1024,
           "statvfs: the free space is the quota less the usage (%d KiB)" % (limit_kib - used_kib),
           "%d blocks of %d free" % (st.f_bavail, st.f_frsize))
        r = run(["df", "-k", m.path])
        note("df -k: %s" % r.stdout.strip().splitlines()[-1])
        ok(r.returncode == 0 and str(limit_kib) in r.stdout.split(), "df -k shows the quota",
           r.stdout.strip())

        r = run(["cp", src, os.path.join(d, "big.eml")])
        note("cp said: %s" % r.stderr.strip())
        ok(r.returncode != 0 and "quota" in r.stderr.lower(),
           "cp of a %d KB message over a 64 KB quota fails with \"Disk quota exceeded\""
           % (len(big) // 1024), "exit %d, stderr %r" % (r.returncode, r.stderr.strip()))

        fd = os.open(os.path.join(d, "big2.eml"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, big2)
        try:
            os.close(fd)
            err = None
        except OSError as e:
            err = e.errno
        ok(err == errno.EDQUOT, "close() of another one fails with EDQUOT",
           "close gave %s" % (errno.errorcode.get(err) if err else "success"))

        for name, data, mid in (("big.eml", big, big_mid), ("big2.eml", big2, big2_mid)):
            ok(server_find(c, "Full", mid) == [], "%s: nothing reached the server" % name)
            ok(name in os.listdir(d), "%s: still shown under its name" % name)
            ok(read_file(os.path.join(d, name)) == data, "%s: reads the bytes written" % name)

        with open(os.path.join(d, "small.eml"), "wb") as f:
            f.write(small)
        found = server_find(c, "Full", small_mid)
        ok(len(found) == 1, "a small message that fits is appended", str(found))

        set_quota(dc, "10M")
        c = dc.client()
        note("quota raised to 10 MB (Dovecot restarted); listing Full now and then")
        t0 = time.monotonic()
        done = False
        while time.monotonic() - t0 < REFUSED_RETRY_WAIT:
            os.listdir(d)  # activity: the outbox is retried on it
            if server_find(c, "Full", big_mid) and server_find(c, "Full", big2_mid):
                done = True
                break
            time.sleep(1)
        ok(done, "both kept messages reached the server once the quota allowed "
           "(%.0f s)" % (time.monotonic() - t0))
        if done:
            for name, data, mid in (("big.eml", big, big_mid), ("big2.eml", big2, big2_mid)):
                found = server_find(c, "Full", mid)
                ok(len(found) == 1, "%s: on the server exactly once" % name, str(found))
                got = server_messages(c, "Full", uids=str(found[0]))[found[0]]["body"]
                ok(got == crlf(data), "%s: byte-identical (LF -> CRLF)" % name)


if __name__ == "__main__":
    main([test_over_quota], doc=__doc__)
