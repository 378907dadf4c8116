#!/usr/bin/env python3
"""Read-only mount of the whole corpus, checked message by message against
an independent IMAP client: every mailbox is a directory with as many .eml
files as the server has messages; every file's bytes are the server's
BODY.PEEK[]; st_size is RFC822.SIZE, st_mtime INTERNALDATE, user.imap.flags
the server's flags; reading everything leaves no message \\Seen; a second
read is served without the server."""

import errno
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, Imapfs, check  # noqa: E402
from test_mount_lib import (eml_uids, mailbox_path, quote, read_file, server_bodies,  # noqa: E402
                            server_mailboxes, server_meta, server_seen, stop_dovecot_hard)


def main():
    with Dovecot(corpus=True) as dc:
        c = dc.client()
        # flags to compare with: some system flags and keywords
        c.select("INBOX")
        c.uid("STORE", "1:5", "+FLAGS", "(\\Flagged $Label1)")
        c.uid("STORE", "7", "+FLAGS", "(\\Answered Junk)")
        c.select(quote("Spam/spam-1"))
        c.uid("STORE", "2", "+FLAGS", "(\\Draft)")
        c.close()
        mailboxes = server_mailboxes(c)
        selectable = [(n, d) for n, d, a in mailboxes if "\\Noselect" not in a
                      and "\\NonExistent" not in a]
        seen_before = {n: server_seen(c, n) for n, _ in selectable}

        with Imapfs(dc, opts=["-o", "refresh=30"]) as m:
            for name, delim, attrs in mailboxes:
                path = os.path.join(m.path, mailbox_path(name, delim))
                check(os.path.isdir(path), "mailbox %s %s is a directory" % (name, attrs))
                if "\\Noselect" in attrs:
                    check(eml_uids(path) == [], "\\Noselect %s holds no messages" % name)
            total = 0
            for name, delim in sorted(selectable):
                path = os.path.join(m.path, mailbox_path(name, delim))
                check(os.path.isdir(path), "%s is a directory" % name)
                meta = server_meta(c, name)
                uids = eml_uids(path)
                check(uids == sorted(meta), "%s: %d .eml files, one per server message"
                      % (name, len(meta)))
                bodies = server_bodies(c, name)
                bad_bytes, bad_size, bad_time, bad_flags = [], [], [], []
                for uid in uids:
                    f = os.path.join(path, "%d.eml" % uid)
                    st = os.stat(f)
                    flags, size, date = meta[uid]
                    if read_file(f) != bodies[uid]:
                        bad_bytes.append(uid)
                    if st.st_size != size:
                        bad_size.append(uid)
                    if int(st.st_mtime) != date or int(st.st_ctime) != date:
                        bad_time.append(uid)
                    got = set(os.getxattr(f, "user.imap.flags").decode().split())
                    if got != flags:
                        bad_flags.append((uid, got, flags))
                check(not bad_bytes, "%s: every file's bytes == BODY.PEEK[] (bad: %s)"
                      % (name, bad_bytes[:5]))
                check(not bad_size, "%s: st_size == RFC822.SIZE (bad: %s)" % (name, bad_size[:5]))
                check(not bad_time, "%s: st_mtime == st_ctime == INTERNALDATE (bad: %s)"
                      % (name, bad_time[:5]))
                check(not bad_flags, "%s: user.imap.flags == server flags (bad: %s)"
                      % (name, bad_flags[:3]))
                total += len(uids)
            check(total > 5000, "read %d messages in all" % total)

            # directories: real link counts, modes, owner
            for name, delim in selectable:
                path = os.path.join(m.path, mailbox_path(name, delim))
                subdirs = [e for e in os.scandir(path) if e.is_dir()]
                check(os.stat(path).st_nlink == 2 + len(subdirs),
                      "%s: st_nlink %d == 2 + %d subdirectories"
                      % (name, os.stat(path).st_nlink, len(subdirs)))
            top = [e for e in os.scandir(m.path) if e.is_dir()]
            check(os.stat(m.path).st_nlink == 2 + len(top), "root: st_nlink == 2 + subdirectories")
            f = os.path.join(m.path, "INBOX", "1.eml")
            st = os.stat(f)
            check(st.st_mode & 0o777 == 0o644 and st.st_uid == os.getuid(),
                  "message files are 0644 and owned by the mounting user")

            # the other attributes
            names = set(os.listxattr(f))
            check({"user.imap.flags", "user.imap.uid", "user.imap.uidvalidity",
                   "user.imap.internaldate"} <= names, "listxattr: %s" % sorted(names))
            check(os.getxattr(f, "user.imap.uid") == b"1", "user.imap.uid")
            typ, data = c.status("INBOX", "(UIDVALIDITY HIGHESTMODSEQ)")
            uidvalidity = data[0].split(b"UIDVALIDITY ")[1].split(b")")[0].split()[0]
            check(os.getxattr(f, "user.imap.uidvalidity") == uidvalidity,
                  "user.imap.uidvalidity == %s" % uidvalidity.decode())
            if b"HIGHESTMODSEQ" in data[0]:
                check("user.imap.modseq" in names and int(os.getxattr(f, "user.imap.modseq")) > 0,
                      "user.imap.modseq with CONDSTORE")
            date = os.getxattr(f, "user.imap.internaldate").decode()
            check(date.endswith("Z") and "T" in date, "user.imap.internaldate is RFC 3339 (%s)" % date)
            for attr in ("user.imap.uid", "user.imap.uidvalidity"):
                try:
                    os.setxattr(f, attr, b"5")
                    ok = False
                except PermissionError:
                    ok = True
                check(ok, "setting %s: EPERM" % attr)
            try:
                os.getxattr(f, "user.imap.nosuch")
                ok = False
            except OSError as e:
                ok = e.errno == 61  # ENODATA
            check(ok, "an unknown attribute: ENODATA")
            # no SELinux labels, no POSIX ACLs: ENOTSUP, so ls -l stops
            # asking for them (coreutils remembers it per file system)
            for attr in ("security.selinux", "system.posix_acl_access"):
                for path in (f, os.path.dirname(f)):
                    try:
                        os.getxattr(path, attr)
                        ok = False
                    except OSError as e:
                        ok = e.errno == errno.ENOTSUP
                    check(ok, "%s of %s: ENOTSUP" % (attr, os.path.basename(path)))

            # getfattr and grep, the tools users run
            out = subprocess.run(["getfattr", "-d", f], stdout=subprocess.PIPE, text=True).stdout
            check("user.imap.flags=" in out and "user.imap.uid=\"1\"" in out,
                  "getfattr -d shows the attributes")
            r = subprocess.run(["grep", "-rl", "viagra", m.path], stdout=subprocess.PIPE)
            check(r.returncode == 0 and r.stdout.count(b"\n") > 0,
                  "grep -rl viagra finds %d files" % r.stdout.count(b"\n"))

            # nothing became \Seen
            for name, _ in selectable:
                check(server_seen(c, name) == seen_before[name],
                      "%s: reading every file set no \\Seen" % name)

            # a second read does not need the server
            stop_dovecot_hard(dc)
            again = read_file(os.path.join(m.path, "INBOX", "2.eml"))
            dc.start()
            check(again == server_bodies(dc.client(), "INBOX", "2")[2],
                  "a file read before is read again while the server is down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
