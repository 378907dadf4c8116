#!/usr/bin/env python3
"""Write path, new messages: cp (plain, -p, --preserve=xattr) of corpus
messages and files written with open/write/close become APPENDs. Checked with
an independent imaplib client right after close(): byte-identical message
(LF -> CRLF, nothing else changed), flags and INTERNALDATE set before close,
exactly one message per file; and the mount shows <UID>.eml at once (the
temporary name gone, st_size/st_mtime/user.imap.uid/content right). A file
closed empty is discarded without an APPEND."""

import calendar
import errno
import hashlib
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_write_lib import (append, corpus_files, create, crlf, eml_uids, fmt, listing,  # noqa: E402
                            main, mbox_dir, mount, need, new_message, note, ok, read_file, run,
                            server_find, server_messages, server_uids, staging_dir, wait_dir,
                            wait_listed, xflags)

F = "user.imap.flags"


def utc(y, mo, d, h, mi, s):
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


def check_new_message(c, m, mailbox, name, sent, before_uids, flags=None, date=None,
                      what=None):
    """After close() of mailbox/name holding `sent`: exactly one new message on
    the server, byte-identical after LF->CRLF, with the flags and date, shown
    in the mount as <UID>.eml with the temporary name gone. Returns the UID."""
    what = what or name
    want = crlf(sent)
    msgs = server_messages(c, mailbox)
    new = sorted(set(msgs) - set(before_uids))
    if not ok(len(new) == 1, "%s: the server holds exactly one new message in %s right after close"
              % (what, mailbox), "new UIDs: %s" % new):
        return None
    uid = new[0]
    got = msgs[uid]
    ok(got["body"] == want, "%s: the server's message is byte-identical to the file (LF -> CRLF), "
       "%d bytes" % (what, len(want)),
       "server has %d bytes, want %d; first difference at byte %s" % (
           len(got["body"]), len(want), first_diff(got["body"], want)))
    ok(got["size"] == len(want), "%s: RFC822.SIZE %d" % (what, len(want)),
       "RFC822.SIZE %s" % got["size"])
    if flags is not None:
        ok(got["flags"] == flags, "%s: the server's flags are %s" % (what, fmt(flags)),
           "server has %s" % fmt(got["flags"]))
    if date is not None:
        ok(got["internaldate"] == date, "%s: INTERNALDATE is %s" % (what, time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(date))),
           "server has %s" % time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(got["internaldate"])))
    d = mbox_dir(m, mailbox)
    names = listing(d)
    ok(name not in names, "%s: the temporary name %r is gone from the listing at once" % (what, name),
       "listing: %s" % names)
    ok(eml_uids(names) == sorted(msgs), "%s: the listing is exactly the server's UIDs (%s)"
       % (what, ", ".join("%d.eml" % u for u in sorted(msgs)[-3:])),
       "listing %s, server UIDs %s" % (names, sorted(msgs)))
    p = os.path.join(d, "%d.eml" % uid)
    try:
        st = os.stat(p)
        ok(st.st_size == len(want), "%s: %d.eml has st_size %d" % (what, uid, len(want)),
           "st_size %d" % st.st_size)
        ok(int(st.st_mtime) == got["internaldate"], "%s: %d.eml has st_mtime = INTERNALDATE"
           % (what, uid), "st_mtime %d, INTERNALDATE %d" % (st.st_mtime, got["internaldate"]))
        ok(os.getxattr(p, "user.imap.uid") == str(uid).encode(),
           "%s: %d.eml has user.imap.uid %d" % (what, uid, uid),
           "user.imap.uid %r" % os.getxattr(p, "user.imap.uid"))
        if flags is not None:
            ok(xflags(p) == flags, "%s: %d.eml shows user.imap.flags %s" % (what, uid, fmt(flags)),
               "getxattr %s" % fmt(xflags(p)))
        body = read_file(p)
        ok(body == want, "%s: reading %d.eml through the mount gives the message" % (what, uid),
           "read %d bytes, first difference at %s" % (len(body), first_diff(body, want)))
    except OSError as e:
        ok(False, "%s: %d.eml can be used in the mount" % (what, uid), str(e))
    return uid


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "%d (%r vs %r)" % (i, a[max(0, i - 10):i + 10], b[max(0, i - 10):i + 10])
    return "%d (one is a prefix of the other)" % min(len(a), len(b))


def test_cp_corpus(dc):
    """cp, cp -p and cp --preserve=timestamps,xattr of corpus messages."""
    c = dc.client()
    create(c, "Copied")
    old, _ = new_message("already-there")
    old_uid = append(c, "Copied", old, "\\Seen")
    files = corpus_files(3, "INBOX") + corpus_files(3, "Spam/spam-1")
    stage = staging_dir()
    try:
        with mount(dc) as m:
            d = mbox_dir(m, "Copied")
            need(wait_listed(d, ["%d.eml" % old_uid]), "set-up: Copied/%d.eml is listed" % old_uid)
            note("corpus files: %s" % ", ".join(os.path.basename(f)[:12] for f in files))
            for i, src in enumerate(files):
                raw = read_file(src)
                name = os.path.basename(src)
                local = os.path.join(stage, name)
                shutil.copyfile(src, local)
                date = utc(2003, 4, 5 + i, 6, 7, 8 + i)
                os.utime(local, (date, date))
                before = server_uids(c, "Copied")
                if i < 2:
                    cmd, flags, want_date = ["cp", local, d + "/"], set(), None
                elif i < 4:
                    cmd, flags, want_date = ["cp", "-p", local, d + "/"], set(), date
                else:
                    flags = {"\\Seen", "$Imported%d" % i}
                    os.setxattr(local, F, " ".join(sorted(flags)).encode())
                    cmd, want_date = ["cp", "--preserve=timestamps,xattr", local, d + "/"], date
                r = run(cmd)
                what = "%s (%s bytes%s)" % (" ".join(cmd[:-2]), len(raw),
                                            ", starts with 'From '" if raw.startswith(b"From ")
                                            else "")
                ok(r.returncode == 0 and not r.stderr, "%s: exit 0, no message" % what,
                   "exit %d: %s" % (r.returncode, r.stderr.strip()))
                uid = check_new_message(c, m, "Copied", name, raw, before, flags=flags,
                                        date=want_date, what=what)
                if uid and want_date is None:
                    got = server_messages(c, "Copied", bodies=False, uids=str(uid))[uid]
                    ok(abs(got["internaldate"] - time.time()) < 600,
                       "%s: INTERNALDATE is about now (no date given)" % what,
                       "INTERNALDATE %s" % time.ctime(got["internaldate"]))
            msgs = server_messages(c, "Copied")
            ok(msgs.get(old_uid, {}).get("body") == crlf(old) and
               msgs[old_uid]["flags"] == {"\\Seen"},
               "the message that was already in Copied is unchanged")
            ok(len(msgs) == len(files) + 1, "Copied holds %d messages in all" % (len(files) + 1),
               "it holds %d" % len(msgs))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_file(path, chunks, mode=0o644):
    """create + write each chunk with its own write(2) + close; returns the
    errno of the first failing call (None when all succeeded)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        return "open", e.errno
    try:
        for ch in chunks:
            n = os.write(fd, ch)
            if n != len(ch):
                return "write", "short write %d of %d" % (n, len(ch))
    except OSError as e:
        os.close(fd)
        return "write", e.errno
    try:
        os.close(fd)
    except OSError as e:
        return "close", e.errno
    return None


def test_write_syscalls(dc):
    """open/write/close with line-end and chunking cases."""
    c = dc.client()
    create(c, "Written")
    cases = []
    data, _ = new_message("lf-only")
    cases.append(("lf.eml", [data], "LF line ends only"))
    data, _ = new_message("crlf", crlf_ends=True)
    cases.append(("crlf.eml", [data], "CRLF line ends already"))
    data, _ = new_message("mixed", body="line one\r\nline two\nline three\r\n\nlast")
    cases.append(("mixed message", [data], "mixed CRLF and LF, a name with a space"))
    data, _ = new_message("no-final-newline")
    data = data.rstrip(b"\n")
    cases.append(("nonl.txt", [data], "no line end after the last line"))
    data, _ = new_message("split-crlf", crlf_ends=True)
    cut = data.index(b"\r\n", 40) + 1
    cases.append(("split", [data[:cut], data[cut:]], "a CRLF split between two write(2)s"))
    data, _ = new_message("eight-bit", body="Grüße aus Köln – ½ € ✓\nZeile zwei",
                          extra_headers="Content-Type: text/plain; charset=utf-8\n"
                                        "Content-Transfer-Encoding: 8bit\n")
    cases.append(("utf8.eml", [data], "8-bit UTF-8 body"))
    big_body = "\n".join("%06d the quick brown fox jumps over the lazy dog %s" % (i, "x" * (i % 50))
                         for i in range(40000))
    data, _ = new_message("large", body=big_body)
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    cases.append(("large.eml", chunks, "%.1f MB in %d writes of 4 KiB" % (len(data) / 1e6,
                                                                         len(chunks))))
    with mount(dc) as m:
        d = mbox_dir(m, "Written")
        need(wait_dir(d), "set-up: the Written directory is there")
        for name, chunks, what in cases:
            before = server_uids(c, "Written")
            err = write_file(os.path.join(d, name), chunks)
            if not ok(err is None, "%s: create, write, close succeed" % what,
                      "%s failed: %s" % (err[0], err[1] if not isinstance(err[1], int)
                                         else errno.errorcode.get(err[1])) if err else ""):
                continue
            sent = b"".join(chunks)
            uid = check_new_message(c, m, "Written", name, sent, before, what=what)
            if uid and len(sent) > 1000000:
                got = server_messages(c, "Written", uids=str(uid))[uid]["body"]
                note("sha256 server %s, file %s" % (hashlib.sha256(got).hexdigest()[:16],
                                                     hashlib.sha256(crlf(sent)).hexdigest()[:16]))


def test_flags_and_date_before_close(dc):
    """setxattr user.imap.flags and a modification time (touch -d, futimens)
    on the open new file go with the APPEND."""
    c = dc.client()
    create(c, "Dated")
    with mount(dc) as m:
        d = mbox_dir(m, "Dated")
        need(wait_dir(d), "set-up: the Dated directory is there")

        data, mid = new_message("touch-d")
        p = os.path.join(d, "touched.eml")
        before = server_uids(c, "Dated")
        with open(p, "wb") as f:
            f.write(data)
            f.flush()
            os.setxattr(p, F, b"\\Seen \\Flagged $Imported")
            r = run(["touch", "-d", "2001-02-03 04:05:06 UTC", p])
            ok(r.returncode == 0, "touch -d on the open new file succeeds", r.stderr.strip())
        check_new_message(c, m, "Dated", "touched.eml", data, before,
                          flags={"\\Seen", "\\Flagged", "$Imported"},
                          date=utc(2001, 2, 3, 4, 5, 6), what="setxattr by path + touch -d")

        data, mid = new_message("futimens")
        p = os.path.join(d, "futimens.eml")
        before = server_uids(c, "Dated")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.setxattr(fd, F, b"$Label1 \\Answered")
            t = utc(1999, 12, 31, 23, 59, 58)
            os.utime(fd, (t, t))
        finally:
            os.close(fd)
        check_new_message(c, m, "Dated", "futimens.eml", data, before,
                          flags={"$Label1", "\\Answered"}, date=t,
                          what="fsetxattr + futimens on the descriptor")

        data, mid = new_message("no-flags")
        p = os.path.join(d, "plain.eml")
        before = server_uids(c, "Dated")
        with open(p, "wb") as f:
            f.write(data)
        check_new_message(c, m, "Dated", "plain.eml", data, before, flags=set(),
                          what="no flags set: none sent (not even \\Seen)")


def test_empty_file_discarded(dc):
    c = dc.client()
    create(c, "Empty")
    data, _ = new_message("keep")
    keep = append(c, "Empty", data)
    with mount(dc) as m:
        d = mbox_dir(m, "Empty")
        need(wait_listed(d, ["%d.eml" % keep]), "set-up: Empty/%d.eml is listed" % keep)
        p = os.path.join(d, "empty.eml")
        try:
            open(p, "wb").close()
            err = None
        except OSError as e:
            err = e
        ok(err is None, "create + close of an empty file succeeds", str(err))
        ok(server_uids(c, "Empty") == [keep], "no APPEND: the server still holds only UID %d" % keep,
           "server UIDs %s" % server_uids(c, "Empty"))
        ok(listing(d) == ["%d.eml" % keep], "the empty file is gone from the listing at once",
           "listing %s" % listing(d))
        r = run(["touch", os.path.join(d, "touched")])
        ok(r.returncode == 0, "touch of a new name succeeds", r.stderr.strip())
        ok(server_uids(c, "Empty") == [keep], "no APPEND after touch",
           "server UIDs %s" % server_uids(c, "Empty"))
        ok(listing(d) == ["%d.eml" % keep], "the touched file is gone from the listing",
           "listing %s" % listing(d))
        ok(dc.message_count("Empty") == 1, "doveadm agrees: Empty holds 1 message")


def test_close_returns_after_append(dc):
    """Each close() returns only after the APPEND is on the server: count after
    every file, no waiting."""
    c = dc.client()
    create(c, "Sequence")
    with mount(dc) as m:
        d = mbox_dir(m, "Sequence")
        need(wait_dir(d), "set-up: the Sequence directory is there")
        mids = []
        for i in range(8):
            data, mid = new_message("seq%d" % i)
            mids.append(mid)
            with open(os.path.join(d, "seq%d" % i), "wb") as f:
                f.write(data)
            n = len(server_uids(c, "Sequence"))
            ok(n == i + 1, "after close() of file %d the server holds %d messages" % (i + 1, i + 1),
               "it holds %d" % n)
        found = [server_find(c, "Sequence", mid) for mid in mids]
        ok(all(len(f) == 1 for f in found), "each of the 8 Message-IDs is on the server exactly once",
           "UIDs per Message-ID: %s" % found)
        uids = [f[0] for f in found if f]
        ok(uids == sorted(uids), "UIDs follow the order the files were closed", str(uids))
        ok(eml_uids(listing(d)) == sorted(uids) and len(listing(d)) == 8,
           "the listing is exactly those 8 <UID>.eml", str(listing(d)))


def test_who_closes(dc):
    """Only the creating process's close APPENDs: a child that inherited the
    descriptor and exits (its close is a FLUSH from another process) sends
    nothing, the parent's later close sends the whole file; a file created
    by a second thread and closed by the main one is sent at that close."""
    import subprocess
    import threading
    c = dc.client()
    create(c, "Closers")
    with mount(dc) as m:
        d = mbox_dir(m, "Closers")
        need(wait_dir(d), "set-up: the Closers directory is there")
        data, mid = new_message("forked-child", body="first half\n" + "x" * 3000 + "\nsecond half")
        cut = data.index(b"second half")
        fd = os.open(os.path.join(d, "forked.eml"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data[:cut])
        r = subprocess.run(["true"], pass_fds=(fd,))
        ok(r.returncode == 0, "a child inherits the open file and exits")
        ok(server_find(c, "Closers", mid) == [],
           "the child's exit (a FLUSH from another process) sent nothing",
           "the server has it: %s" % server_find(c, "Closers", mid))
        os.write(fd, data[cut:])
        os.close(fd)
        found = server_find(c, "Closers", mid)
        if ok(len(found) == 1, "the parent's close sent it, once", "UIDs %s" % found):
            got = server_messages(c, "Closers", uids=str(found[0]))[found[0]]["body"]
            ok(got == crlf(data), "the server holds the whole file, both halves",
               "%d bytes, want %d" % (len(got), len(crlf(data))))

        data2, mid2 = new_message("other-thread")
        box = {}

        def creator():
            try:
                box["fd"] = os.open(os.path.join(d, "threaded.eml"),
                                    os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(box["fd"], data2)
            except OSError as e:
                box["err"] = e
        t = threading.Thread(target=creator)
        t.start()
        t.join()
        if need("fd" in box, "a second thread creates and writes the file (%s)" % box.get("err")):
            ok(server_find(c, "Closers", mid2) == [], "nothing is sent before a close")
            os.close(box["fd"])  # the main thread: another thread, the same process
            found = server_find(c, "Closers", mid2)
            ok(len(found) == 1, "the main thread's close sent it, once, before close returned",
               "UIDs %s" % found)


if __name__ == "__main__":
    main([test_cp_corpus, test_write_syscalls, test_flags_and_date_before_close,
          test_empty_file_discarded, test_close_returns_after_append, test_who_closes],
         doc=__doc__)
