#!/usr/bin/env python3
"""Write path, refusals and failures: writing into or truncating an existing
message gives EPERM and changes nothing; with -o ro every write gives EROFS
and the server is untouched; an APPEND that cannot reach the server (Dovecot
stopped before close()) makes close() fail (EIO) and cp report it, keeps the
bytes readable under the original name (the outbox), appends them exactly
once after the server is back (on later activity, bounded wait), and a file
deleted from the outbox is never appended; a writer killed before close()
sends nothing and its bytes stay held. Server side checked with an
independent imaplib client / doveadm."""

import errno
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_write_lib import (Writer, append, create, crlf, expect_errno, fmt,  # noqa: E402
                            listing, main, mbox_dir, mount, msg_path, need, new_message, note, ok,
                            read_file, run, server_find, server_mailboxes, server_messages,
                            server_uids, staging_dir, wait_dir, wait_listed, wait_until,
                            xflags)

RETRY_WAIT = 30.0   # the contract's bound for "retried on later activity"
F = "user.imap.flags"


def test_write_into_existing_message(dc):
    c = dc.client()
    create(c, "Fest")
    data, mid = new_message("immutable")
    uid = append(c, "Fest", data, "\\Seen")
    want = crlf(data)
    stage = staging_dir()
    try:
        with mount(dc) as m:
            p = msg_path(m, "Fest", uid)
            need(wait_listed(os.path.dirname(p), [os.path.basename(p)]), "set-up: %s is listed" % p)
            # read it first: a mount that answered a read-only OPEN with ENOSYS
            # would get no OPEN for the writes below and could not refuse them
            ok(read_file(p) == want, "set-up: the message reads back before the write attempts")
            expect_errno(errno.EPERM, "open(r+b) of an existing message", open, p, "r+b")
            expect_errno(errno.EPERM, "open(ab) of an existing message", open, p, "ab")
            expect_errno(errno.EPERM, "open(wb) (O_TRUNC) of an existing message", open, p, "wb")
            expect_errno(errno.EPERM, "os.open(O_WRONLY) of an existing message", os.open, p,
                         os.O_WRONLY)
            expect_errno(errno.EPERM, "truncate(0) of an existing message", os.truncate, p, 0)
            expect_errno(errno.EPERM, "truncate(10) of an existing message", os.truncate, p, 10)
            src = os.path.join(stage, "other.eml")
            with open(src, "wb") as f:
                f.write(new_message("overwrite")[0])
            r = run(["cp", src, p])
            ok(r.returncode != 0 and "Operation not permitted" in r.stderr,
               "cp over an existing message fails with 'Operation not permitted'",
               "exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
            r = run(["sh", "-c", 'echo appended >> "$1"', "sh", p])
            ok(r.returncode != 0 and "Operation not permitted" in r.stderr,
               "echo >> an existing message fails with 'Operation not permitted'",
               "exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
            got = server_messages(c, "Fest")
            ok(list(got) == [uid] and got[uid]["body"] == want and got[uid]["flags"] == {"\\Seen"},
               "the server still has the one message, unchanged, same UID and flags",
               "server: %s" % {u: (len(v["body"]), fmt(v["flags"])) for u, v in got.items()})
            ok(os.stat(p).st_size == len(want) and read_file(p) == want,
               "the mount still shows the message unchanged (size %d, content)" % len(want))
            ok(listing(os.path.dirname(p)) == [os.path.basename(p)],
               "the directory still lists only %s" % os.path.basename(p),
               str(listing(os.path.dirname(p))))
    finally:
        import shutil
        shutil.rmtree(stage, ignore_errors=True)


def test_ro_mount(dc):
    c = dc.client()
    create(c, "Nur")
    create(c, "NurLeer")
    data, mid = new_message("readonly")
    uid = append(c, "Nur", data, "\\Seen $Fix")
    boxes = server_mailboxes(c)
    with mount(dc, "-o", "ro") as m:
        r = m.path
        p = msg_path(m, "Nur", uid)
        need(wait_listed(os.path.dirname(p), [os.path.basename(p)]), "set-up: %s is listed" % p)
        need(wait_listed(r, ["NurLeer"]), "set-up: NurLeer is listed")
        ok(read_file(p) == crlf(data), "-o ro still reads the message")
        d = mbox_dir(m, "Nur")
        expect_errno(errno.EROFS, "-o ro: create a new file", os.open, os.path.join(d, "new.eml"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        expect_errno(errno.EROFS, "-o ro: mkdir", os.mkdir, os.path.join(r, "Neu"))
        expect_errno(errno.EROFS, "-o ro: mkdir inside a mailbox", os.mkdir, os.path.join(d, "Sub"))
        expect_errno(errno.EROFS, "-o ro: rmdir of an empty mailbox", os.rmdir,
                     os.path.join(r, "NurLeer"))
        expect_errno(errno.EROFS, "-o ro: unlink a message", os.unlink, p)
        expect_errno(errno.EROFS, "-o ro: rename a message to another mailbox", os.rename, p,
                     os.path.join(r, "NurLeer", os.path.basename(p)))
        expect_errno(errno.EROFS, "-o ro: rename a mailbox", os.rename, os.path.join(r, "NurLeer"),
                     os.path.join(r, "Umbenannt"))
        expect_errno(errno.EROFS, "-o ro: setxattr user.imap.flags", os.setxattr, p, F, b"\\Flagged")
        expect_errno(errno.EROFS, "-o ro: removexattr user.imap.flags", os.removexattr, p, F)
        expect_errno(errno.EROFS, "-o ro: open(r+b) of a message", open, p, "r+b")
        expect_errno(errno.EROFS, "-o ro: truncate a message", os.truncate, p, 0)
        res = run(["cp", "/etc/hostname", d + "/"])
        ok(res.returncode != 0 and "Read-only file system" in res.stderr,
           "-o ro: cp into a mailbox fails with 'Read-only file system'",
           "exit %d, stderr %r" % (res.returncode, res.stderr.strip()))
        ok(server_mailboxes(c) == boxes, "the server's mailboxes are unchanged")
        got = server_messages(c, "Nur")
        ok(list(got) == [uid] and got[uid]["body"] == crlf(data) and
           got[uid]["flags"] == {"\\Seen", "$Fix"}, "Nur still holds the message, flags unchanged",
           "server: %s" % {u: fmt(v["flags"]) for u, v in got.items()})
        ok(server_uids(c, "NurLeer") == [], "NurLeer is still empty")
        ok(xflags(p) == {"\\Seen", "$Fix"}, "the mount's flags are unchanged")


def server_count_by_mid(dc, mailbox, mids):
    """{mid: number of messages} with a fresh client (the old one died with
    the server); None when the server cannot be reached."""
    try:
        c = dc.client()
    except Exception as e:
        note("server not reachable yet: %s" % e)
        return None
    try:
        return {mid: len(server_find(c, mailbox, mid)) for mid in mids}
    finally:
        try:
            c.logout()
        except Exception:
            pass


def kill_sessions(dc):
    """End the instance's IMAP session processes still serving connections:
    dc.stop() kills the master quickly, and Dovecot's imap processes outlive
    it and go on serving the connections they have, so the server would not
    be down for a client that is already connected. Found by their server
    side sockets (local port = the instance's ports) in /proc."""
    import signal
    ports = {int(dc.imaps_port), int(dc.imap_port)}
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            if int(parts[1].rsplit(":", 1)[1], 16) in ports and parts[3] == "01":
                inodes.add("socket:[%s]" % parts[9])
    killed = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
            if any(os.readlink("/proc/%s/fd/%s" % (pid, fd)) in inodes for fd in fds):
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
        except OSError:
            continue
    note("ended %d leftover IMAP session process(es) of the stopped instance" % killed)


def test_append_failure_outbox(dc):
    c = dc.client()
    create(c, "Ausgang")
    old_data, _ = new_message("already-there")
    old_uid = append(c, "Ausgang", old_data)
    a_data, a_mid = new_message("outbox-a", crlf_ends=True)
    b_data, b_mid = new_message("outbox-b", crlf_ends=True)
    x_data, x_mid = new_message("outbox-abandoned", crlf_ends=True)
    stage = staging_dir()
    for name, data in (("b.eml", b_data), ("x.eml", x_data)):
        with open(os.path.join(stage, name), "wb") as f:
            f.write(data)
    stopped = False
    try:
        with mount(dc) as m:
            d = mbox_dir(m, "Ausgang")
            need(wait_listed(d, ["%d.eml" % old_uid]), "set-up: Ausgang/%d.eml is listed" % old_uid)

            w = Writer(os.path.join(d, "kept-a.eml"), a_data, stage)
            need(w.first == "written", "create + write of kept-a.eml succeed (server up)", w.first)
            dc.stop()
            stopped = True
            kill_sessions(dc)
            note("Dovecot stopped; now close() of kept-a.eml")
            t0 = time.monotonic()
            res = w.close()
            ok(res.startswith("close errno %d " % errno.EIO),
               "close() of kept-a.eml with the server down fails with EIO",
               "child said %r after %.1f s" % (res, time.monotonic() - t0))
            note("close() returned after %.1f s" % (time.monotonic() - t0))

            r = run(["cp", os.path.join(stage, "b.eml"), os.path.join(d, "kept-b.eml")])
            ok(r.returncode != 0 and r.stderr.strip(), "cp to kept-b.eml with the server down fails "
               "and says so", "exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
            note("cp said: %s" % r.stderr.strip())
            r = run(["cp", os.path.join(stage, "x.eml"), os.path.join(d, "abandon.eml")])
            ok(r.returncode != 0, "cp to abandon.eml with the server down fails",
               "exit %d" % r.returncode)

            names = listing(d)
            ok({"kept-a.eml", "kept-b.eml", "abandon.eml"} <= set(names),
               "the three unsent files stay listed under their own names", str(names))
            for name, data in (("kept-a.eml", a_data), ("kept-b.eml", b_data),
                               ("abandon.eml", x_data)):
                try:
                    got = read_file(os.path.join(d, name))
                    size = os.stat(os.path.join(d, name)).st_size
                except OSError as e:
                    got, size = "error %s" % e, None
                ok(got == data and size == len(data),
                   "%s reads back the %d bytes written (server still down)" % (name, len(data)),
                   "read %r, st_size %s" % (got[:80], size))
            try:
                os.unlink(os.path.join(d, "abandon.eml"))
                err = None
            except OSError as e:
                err = e
            ok(err is None, "unlink abandon.eml (abandoning it) succeeds", str(err))
            ok("abandon.eml" not in listing(d), "abandon.eml is gone from the listing",
               str(listing(d)))

            dc.start()
            stopped = False
            note("Dovecot started again; listing Ausgang every 0.5 s for at most %.0f s"
                 % RETRY_WAIT)
            t0 = time.monotonic()
            counts = None
            while time.monotonic() - t0 < RETRY_WAIT:
                listing(d)
                counts = server_count_by_mid(dc, "Ausgang", [a_mid, b_mid])
                if counts and all(counts.values()):
                    break
                time.sleep(0.5)
            ok(counts is not None and all(counts.values()),
               "both kept files reached the server within %.0f s (%.1f s)"
               % (RETRY_WAIT, time.monotonic() - t0), "counts by Message-ID: %s" % counts)
            note("more activity for 3 s, then count again")
            t1 = time.monotonic()
            while time.monotonic() - t1 < 3:
                listing(d)
                time.sleep(0.3)
            c = dc.client()
            counts = {mid: len(server_find(c, "Ausgang", mid)) for mid in (a_mid, b_mid, x_mid)}
            ok(counts[a_mid] == 1 and counts[b_mid] == 1,
               "each kept message is on the server exactly once", "counts: %s" % counts)
            ok(counts[x_mid] == 0, "the abandoned message was never appended",
               "count: %d" % counts[x_mid])
            msgs = server_messages(c, "Ausgang")
            ok(len(msgs) == 3 and dc.message_count("Ausgang") == 3,
               "Ausgang holds 3 messages (the old one and the two kept)", "it holds %d" % len(msgs))
            by_mid = {}
            for uid, v in msgs.items():
                for mid in (a_mid, b_mid):
                    if mid.encode() in v["body"]:
                        by_mid[mid] = uid
            ok(msgs.get(by_mid.get(a_mid), {}).get("body") == a_data and
               msgs.get(by_mid.get(b_mid), {}).get("body") == b_data,
               "the two appended messages are byte-identical to what was written")
            names = listing(d)
            ok(names == ["%d.eml" % u for u in sorted(msgs)],
               "the mount now lists exactly the server's UIDs; kept-a/kept-b/abandon names gone",
               "listing %s, server %s" % (names, sorted(msgs)))
            for mid, data in ((a_mid, a_data), (b_mid, b_data)):
                if mid in by_mid:
                    p = os.path.join(d, "%d.eml" % by_mid[mid])
                    ok(os.path.exists(p) and read_file(p) == data,
                       "%d.eml in the mount reads as the appended message" % by_mid[mid])
    finally:
        if stopped:
            dc.start()
        import shutil
        shutil.rmtree(stage, ignore_errors=True)


def test_killed_writer(dc):
    """A writer killed by a signal before it closes its file (^C, kill -9)
    sends nothing: the likely cut-short bytes stay held under their name,
    readable, across a remount, never appended by a retry; rm drops them.
    A writer that exits without closing, by no signal, sends its file."""
    import shutil
    import signal
    import subprocess
    from harness import Imapfs
    c = dc.client()
    create(c, "Killed")
    stage = staging_dir()
    cache = os.path.join(stage, "cache.db")
    cases = []
    try:
        with Imapfs(dc, opts=["-o", "refresh=1"], cache_path=cache) as m:
            d = mbox_dir(m, "Killed")
            need(wait_dir(d), "set-up: Killed is there")
            for sig, name in ((signal.SIGKILL, "kill9.eml"), (signal.SIGINT, "ctrl-c.eml")):
                data, mid = new_message("killed-%d" % sig, body="x" * 5000)
                w = Writer(os.path.join(d, name), data, stage)
                need(w.first == "written", "%s: a child creates and writes it" % name, w.first)
                w.proc.send_signal(sig)
                w.proc.wait()
                ok(w.proc.returncode == -sig, "%s: the child died of signal %d" % (name, sig),
                   "exit status %s" % w.proc.returncode)
                cases.append((name, data, mid))
            for name, data, mid in cases:
                ok(server_find(c, "Killed", mid) == [],
                   "%s: nothing reached the server" % name, str(server_find(c, "Killed", mid)))
                ok(name in listing(d), "%s: the file is still shown under its name" % name,
                   str(listing(d)))
                ok(read_file(os.path.join(d, name)) == data,
                   "%s: it reads the bytes the child wrote" % name)
            # killed before writing anything: nothing to keep, dropped as usual
            w = Writer(os.path.join(d, "empty-killed.eml"), b"", stage)
            need(w.first == "written", "empty-killed.eml: a child creates it, writes nothing",
                 w.first)
            w.proc.kill()
            w.proc.wait()
            ok(wait_until(lambda: "empty-killed.eml" not in listing(d), 10),
               "empty-killed.eml: a killed writer's empty file is dropped", str(listing(d)))
            # a writer exiting by itself without close(): sent as usual
            data, mid = new_message("exit-without-close")
            src = os.path.join(stage, "exit.src")
            with open(src, "wb") as f:
                f.write(data)
            code = ("import os, sys\n"
                    "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)\n"
                    "os.write(fd, open(sys.argv[2], 'rb').read())\n"
                    "os._exit(0)\n")
            r = subprocess.run([sys.executable, "-c", code, os.path.join(d, "exits.eml"), src])
            ok(r.returncode == 0, "a child writes exits.eml and exits without close()")
            ok(len(server_find(c, "Killed", mid)) == 1,
               "exits.eml was appended by the close at its exit",
               str(server_find(c, "Killed", mid)))

        # remount on the same cache: still held, not retried
        with Imapfs(dc, opts=["-o", "refresh=1"], cache_path=cache) as m:
            d = mbox_dir(m, "Killed")
            need(wait_listed(d, [n for n, _, _ in cases]),
                 "after a remount both held files are listed again")
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:  # a retry round would run meanwhile
                listing(d)
                time.sleep(0.5)
            for name, data, mid in cases:
                ok(server_find(c, "Killed", mid) == [],
                   "%s: still not on the server after a remount and 4 s of activity" % name)
                ok(read_file(os.path.join(d, name)) == data, "%s: still readable" % name)
            for name, _, _ in cases:
                os.unlink(os.path.join(d, name))
            ok(not any(n in listing(d) for n, _, _ in cases), "rm drops both", str(listing(d)))
        with Imapfs(dc, opts=["-o", "refresh=1"], cache_path=cache) as m:
            d = mbox_dir(m, "Killed")
            need(wait_dir(d), "remounted once more")
            ok(not any(n in listing(d) for n, _, _ in cases),
               "and they stay gone after another remount", str(listing(d)))
        for name, _, mid in cases:
            ok(server_find(c, "Killed", mid) == [], "%s never reached the server" % name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


if __name__ == "__main__":
    main([test_write_into_existing_message, test_ro_mount, test_append_failure_outbox,
          test_killed_writer], doc=__doc__)
