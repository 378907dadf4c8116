#!/usr/bin/env python3
"""Write path, removing and moving messages: rm/unlink is UID STORE \\Deleted +
UID EXPUNGE of that UID only (a message another client marked \\Deleted
survives), -o trash=MAILBOX makes rm a move there (and rm inside it
expunges), mv/rename to another mailbox is UID MOVE (source gone, target
present under its new UID, flags and INTERNALDATE kept), rename within the
mailbox gives EPERM. Server side checked with an independent imaplib client
right after each syscall; the mount's listings must be right at once."""

import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_write_lib import (append, create, crlf, expect_errno, fmt, listing,  # noqa: E402
                            main, mbox_dir, mount, msg_path, need, new_message, note, ok, read_file,
                            run, server_find, server_messages, server_uids, store, wait_listed)

DATE = '"05-Apr-2003 06:07:08 +0000"'
DATE_EPOCH = 1049522828


def fill(c, mailbox, tags, flags=""):
    """APPEND one message per tag; returns {tag: (uid, data, message_id)}."""
    create(c, mailbox)
    out = {}
    for t in tags:
        data, mid = new_message(t)
        out[t] = (append(c, mailbox, data, flags, DATE), data, mid)
    return out


def listed(m, mailbox, uids):
    d = mbox_dir(m, mailbox)
    return need(wait_listed(d, ["%d.eml" % u for u in uids]),
                "set-up: %s lists %s" % (mailbox, ", ".join("%d.eml" % u for u in uids)))


def check_listing(m, mailbox, want_uids, what):
    names = listing(mbox_dir(m, mailbox))
    ok(names == ["%d.eml" % u for u in sorted(want_uids)],
       "%s: the mount lists exactly %s at once" % (what, ["%d.eml" % u for u in sorted(want_uids)]),
       "listing: %s" % names)


def test_rm_expunges_only_that_message(dc):
    c = dc.client()
    create(c, "Trash", exist_ok=True)
    msgs = fill(c, "RmBox", ["a", "b", "c", "d", "e"], "\\Seen")
    uid = {t: v[0] for t, v in msgs.items()}
    store(c, "RmBox", uid["c"], "+FLAGS.SILENT", "\\Deleted")
    note("another client marked c (UID %d) \\Deleted without expunging" % uid["c"])
    with mount(dc) as m:
        listed(m, "RmBox", uid.values())
        os.unlink(msg_path(m, "RmBox", uid["a"]))
        left = server_uids(c, "RmBox")
        ok(left == [uid["b"], uid["c"], uid["d"], uid["e"]],
           "unlink a.eml: the server no longer has UID %d, and has all the others" % uid["a"],
           "server UIDs %s" % left)
        got = server_messages(c, "RmBox", bodies=False)
        ok(uid["c"] in got and got[uid["c"]]["flags"] == {"\\Seen", "\\Deleted"},
           "the other client's \\Deleted message (UID %d) survives, still \\Deleted" % uid["c"],
           "server: %s" % {u: fmt(v["flags"]) for u, v in got.items()})
        ok(all("\\Deleted" not in got[uid[t]]["flags"] for t in "bde"),
           "no other message was marked \\Deleted",
           "server: %s" % {u: fmt(v["flags"]) for u, v in got.items()})
        check_listing(m, "RmBox", [uid[t] for t in "bcde"], "after unlink")

        r = run(["rm", msg_path(m, "RmBox", uid["b"])])
        ok(r.returncode == 0 and not r.stderr, "rm b.eml: exit 0", r.stderr.strip())
        left = server_uids(c, "RmBox")
        ok(left == [uid["c"], uid["d"], uid["e"]], "rm b.eml: UID %d expunged, c d e remain"
           % uid["b"], "server UIDs %s" % left)
        check_listing(m, "RmBox", [uid[t] for t in "cde"], "after rm")

        os.unlink(msg_path(m, "RmBox", uid["d"]))
        left = server_uids(c, "RmBox")
        ok(left == [uid["c"], uid["e"]], "unlink d.eml: only UID %d went; c still survives"
           % uid["d"], "server UIDs %s" % left)
        body = server_messages(c, "RmBox")[uid["e"]]["body"]
        ok(body == crlf(msgs["e"][1]), "the remaining message e is unchanged")
        ok(server_uids(c, "Trash") == [], "without -o trash, nothing went to Trash",
           "Trash UIDs %s" % server_uids(c, "Trash"))
        ok(dc.message_count("RmBox") == 2, "doveadm agrees: RmBox holds 2 messages")
        expect_errno(errno.ENOENT, "stat of the removed a.eml", os.stat,
                     msg_path(m, "RmBox", uid["a"]))


def test_rm_with_trash_option(dc):
    c = dc.client()
    create(c, "Trash", exist_ok=True)
    create(c, "Bin")
    msgs = fill(c, "TrashSrc", ["x", "y", "z"])
    uid = {t: v[0] for t, v in msgs.items()}
    store(c, "TrashSrc", uid["x"], "+FLAGS.SILENT", "\\Seen $Kept")
    store(c, "TrashSrc", uid["z"], "+FLAGS.SILENT", "\\Deleted")
    note("another client marked z (UID %d) \\Deleted; trash is Bin (not Trash)" % uid["z"])
    with mount(dc, "-o", "trash=Bin") as m:
        listed(m, "TrashSrc", uid.values())
        r = run(["rm", msg_path(m, "TrashSrc", uid["x"])])
        ok(r.returncode == 0 and not r.stderr, "rm x.eml with -o trash=Bin: exit 0", r.stderr.strip())
        left = server_uids(c, "TrashSrc")
        ok(left == [uid["y"], uid["z"]], "x left TrashSrc; y and the other client's \\Deleted z stay",
           "server UIDs %s" % left)
        found = server_find(c, "Bin", msgs["x"][2])
        ok(len(found) == 1, "x is in Bin exactly once", "UIDs in Bin with its Message-ID: %s" % found)
        ok(server_uids(c, "Trash") == [], "nothing went to the other mailbox named Trash")
        if found:
            got = server_messages(c, "Bin")[found[0]]
            ok(got["body"] == crlf(msgs["x"][1]), "the message in Bin is byte-identical")
            ok(got["flags"] == {"\\Seen", "$Kept"}, "it kept its flags and is not \\Deleted",
               "flags %s" % fmt(got["flags"]))
            ok(got["internaldate"] == DATE_EPOCH, "it kept its INTERNALDATE (a move, not an APPEND)")
            check_listing(m, "TrashSrc", [uid["y"], uid["z"]], "TrashSrc after rm")
            check_listing(m, "Bin", found, "Bin after rm")

            os.unlink(msg_path(m, "Bin", found[0]))
            ok(server_uids(c, "Bin") == [], "unlink inside Bin expunges: Bin is empty",
               "Bin UIDs %s" % server_uids(c, "Bin"))
            ok(server_uids(c, "TrashSrc") == [uid["y"], uid["z"]] and
               server_uids(c, "Trash") == [], "... and it did not go anywhere else")
            check_listing(m, "Bin", [], "Bin after unlink inside it")
        os.unlink(msg_path(m, "TrashSrc", uid["y"]))
        ok(len(server_find(c, "Bin", msgs["y"][2])) == 1 and
           server_uids(c, "TrashSrc") == [uid["z"]],
           "unlink y.eml moves it to Bin too; z still survives in TrashSrc",
           "TrashSrc %s" % server_uids(c, "TrashSrc"))


def check_moved(c, m, src, dst, msg, before_dst, flags, what):
    """msg (uid, data, mid) left src and is once in dst under a new UID."""
    uid, data, mid = msg
    ok(uid not in server_uids(c, src) and server_find(c, src, mid) == [],
       "%s: the source %s no longer has it" % (what, src))
    found = server_find(c, dst, mid)
    if not ok(len(found) == 1, "%s: the target %s has it exactly once" % (what, dst),
              "UIDs with its Message-ID: %s" % found):
        return None
    new = found[0]
    ok(new not in before_dst and new > max(before_dst or [0]),
       "%s: under a new UID (%d)" % (what, new), "target UIDs before: %s" % before_dst)
    got = server_messages(c, dst)[new]
    ok(got["body"] == crlf(data), "%s: byte-identical in %s" % (what, dst))
    ok(got["flags"] == flags and got["internaldate"] == DATE_EPOCH,
       "%s: flags %s and INTERNALDATE kept" % (what, fmt(flags)),
       "flags %s, INTERNALDATE %s" % (fmt(got["flags"]), got["internaldate"]))
    ok(not os.path.exists(msg_path(m, src, uid)), "%s: %s/%d.eml is gone from the mount at once"
       % (what, src, uid))
    check_listing(m, dst, server_uids(c, dst), "%s: %s" % (what, dst))
    p = msg_path(m, dst, new)
    try:
        ok(read_file(p) == crlf(data) and os.getxattr(p, "user.imap.uid") == str(new).encode(),
           "%s: %s/%d.eml reads as the message, user.imap.uid %d" % (what, dst, new, new))
    except OSError as e:
        ok(False, "%s: %s/%d.eml is readable" % (what, dst, new), str(e))
    return new


def test_mv_between_mailboxes(dc):
    c = dc.client()
    msgs = fill(c, "MvSrc", ["p", "q", "r", "s", "t"])
    uid = {t: v[0] for t, v in msgs.items()}
    store(c, "MvSrc", uid["p"], "+FLAGS.SILENT", "\\Flagged $Keep")
    store(c, "MvSrc", uid["t"], "+FLAGS.SILENT", "\\Deleted")
    note("another client marked t (UID %d) \\Deleted" % uid["t"])
    dst = fill(c, "MvDst", ["already"])
    create(c, "Ablage")
    create(c, "Ablage/Geschäft")
    with mount(dc) as m:
        listed(m, "MvSrc", uid.values())
        listed(m, "MvDst", [dst["already"][0]])
        before = server_uids(c, "MvDst")
        r = run(["mv", msg_path(m, "MvSrc", uid["p"]), mbox_dir(m, "MvDst") + "/"])
        ok(r.returncode == 0 and not r.stderr, "mv MvSrc/%d.eml MvDst/: exit 0" % uid["p"],
           r.stderr.strip())
        check_moved(c, m, "MvSrc", "MvDst", msgs["p"], before, {"\\Flagged", "$Keep"}, "mv to dir/")

        before = server_uids(c, "MvDst")
        os.rename(msg_path(m, "MvSrc", uid["q"]), os.path.join(mbox_dir(m, "MvDst"), "any name.txt"))
        new = check_moved(c, m, "MvSrc", "MvDst", msgs["q"], before, set(),
                          "rename(2) to MvDst/'any name.txt'")
        ok("any name.txt" not in listing(mbox_dir(m, "MvDst")),
           "the name given to rename(2) does not show; the message shows as %s.eml" % new)

        before = server_uids(c, "Ablage/Geschäft")
        os.rename(msg_path(m, "MvSrc", uid["r"]),
                  os.path.join(mbox_dir(m, "Ablage/Geschäft"), "%d.eml" % uid["r"]))
        check_moved(c, m, "MvSrc", "Ablage/Geschäft", msgs["r"], before, set(),
                    "rename(2) into Ablage/Geschäft")

        left = server_uids(c, "MvSrc")
        ok(left == [uid["s"], uid["t"]], "MvSrc keeps s and the other client's \\Deleted t",
           "server UIDs %s" % left)
        check_listing(m, "MvSrc", [uid["s"], uid["t"]], "MvSrc after the moves")
        ok(server_uids(c, "MvDst") == sorted(server_uids(c, "MvDst")) and
           dc.message_count("MvDst") == 3, "doveadm agrees: MvDst holds 3 messages")


def test_rename_within_mailbox(dc):
    c = dc.client()
    msgs = fill(c, "Same", ["one", "two"])
    u1, u2 = msgs["one"][0], msgs["two"][0]
    with mount(dc) as m:
        listed(m, "Same", [u1, u2])
        d = mbox_dir(m, "Same")
        p = msg_path(m, "Same", u1)
        expect_errno(errno.EPERM, "rename(2) %d.eml to 999.eml in the same mailbox" % u1,
                     os.rename, p, os.path.join(d, "999.eml"))
        expect_errno(errno.EPERM, "rename(2) %d.eml to 'other name' in the same mailbox" % u1,
                     os.rename, p, os.path.join(d, "other name"))
        r = run(["mv", p, os.path.join(d, "renamed.eml")])
        ok(r.returncode != 0 and "Operation not permitted" in r.stderr,
           "mv within the mailbox fails with 'Operation not permitted'",
           "exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
        ok(server_uids(c, "Same") == [u1, u2], "the server still has both messages, same UIDs",
           "server UIDs %s" % server_uids(c, "Same"))
        ok(server_messages(c, "Same")[u1]["body"] == crlf(msgs["one"][1]),
           "the message is unchanged")
        check_listing(m, "Same", [u1, u2], "after the refused renames")


if __name__ == "__main__":
    main([test_rm_expunges_only_that_message, test_rm_with_trash_option,
          test_mv_between_mailboxes, test_rename_within_mailbox], doc=__doc__)
