#!/usr/bin/env python3
"""Write path, directories: mkdir -> CREATE, rmdir -> DELETE (ENOTEMPTY with
messages or children; INBOX cannot go), rename/mv of a directory -> RENAME,
names encoded to modified UTF-7 and sent as exactly one argument (non-ASCII,
double quotes, backslash, '&'). The server's mailbox list is read on the
wire (LIST "" "*", raw mUTF-7) by an independent imaplib client and by
doveadm, right after each syscall; the mount's listing must be right at once."""

import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_write_lib import (append, create, crlf, eml_uids, expect_errno, listing, main,  # noqa: E402
                            mount, mutf7, need, new_message, note, ok, run,
                            server_find, server_mailboxes, server_messages, server_uids,
                            wait_dir, wait_listed)


def doveadm_names(dc):
    return set(dc.doveadm("mailbox", "list", "-u", dc.user).splitlines())


def check_added(c, dc, before, names, what):
    """The server's mailbox list is `before` plus exactly `names` (decoded)."""
    after = server_mailboxes(c)
    want = {mutf7(n) for n in names}
    ok(after - before == want and before <= after,
       "%s: the server has exactly the new mailbox(es) %s (on the wire: %s)"
       % (what, sorted(names), sorted(want)),
       "added %s, removed %s" % (sorted(after - before), sorted(before - after)))
    dv = doveadm_names(dc)
    ok(set(names) <= dv, "%s: doveadm mailbox list shows %s" % (what, sorted(names)),
       "doveadm lists %s" % sorted(dv))
    return after


def test_mkdir(dc):
    c = dc.client()
    data, _ = new_message("inbox")
    append(c, "INBOX", data)
    with mount(dc) as m:
        need(wait_dir(os.path.join(m.path, "INBOX")), "set-up: INBOX is in the mount")
        before = server_mailboxes(c)
        os.mkdir(os.path.join(m.path, "Projekte"))
        before = check_added(c, dc, before, ["Projekte"], "mkdir Projekte")
        ok("Projekte" in listing(m.path), "the root listing shows Projekte at once",
           str(listing(m.path)))
        ok(listing(os.path.join(m.path, "Projekte")) == [], "Projekte is an empty directory")
        ok(os.path.isdir(os.path.join(m.path, "Projekte")), "Projekte is a directory")

        os.mkdir(os.path.join(m.path, "Projekte", "2026"))
        before = check_added(c, dc, before, ["Projekte/2026"], "mkdir Projekte/2026")
        ok(listing(os.path.join(m.path, "Projekte")) == ["2026"],
           "Projekte lists its child 2026 at once", str(listing(os.path.join(m.path, "Projekte"))))

        r = run(["mkdir", "-p", os.path.join(m.path, "Tief", "Tiefer", "Am tiefsten")])
        ok(r.returncode == 0, "mkdir -p Tief/Tiefer/'Am tiefsten' succeeds", r.stderr.strip())
        before = check_added(c, dc, before, ["Tief", "Tief/Tiefer", "Tief/Tiefer/Am tiefsten"],
                             "mkdir -p")

        expect_errno(errno.EEXIST, "mkdir of the existing Projekte", os.mkdir,
                     os.path.join(m.path, "Projekte"))
        ok(server_mailboxes(c) == before, "... and the server's list is unchanged")

        note("a message written into the new mailbox (needs the APPEND path)")
        data, mid = new_message("into-new")
        try:
            with open(os.path.join(m.path, "Projekte", "2026", "neu.eml"), "wb") as f:
                f.write(data)
            err = None
        except OSError as e:
            err = e
        ok(err is None, "create + write + close in Projekte/2026 succeeds", str(err))
        found = server_find(c, "Projekte/2026", mid)
        ok(len(found) == 1, "the server has the message in Projekte/2026", "found %s" % found)
        ok(eml_uids(listing(os.path.join(m.path, "Projekte", "2026"))) == found,
           "Projekte/2026 lists it as <UID>.eml", str(listing(os.path.join(m.path, "Projekte", "2026"))))


ODD_NAMES = [
    ("Entwürfe", "non-ASCII"),
    ('Say "hi"', "double quotes"),
    ('Zitat "Grüße" & Co', "quotes, 8-bit and '&'"),
    ("back\\slash", "a backslash"),
    ("日本語", "CJK"),
    ("  spaced  out ", "leading, inner and trailing spaces"),
]


def test_mkdir_encoded_names(dc):
    c = dc.client()
    with mount(dc) as m:
        need(wait_dir(os.path.join(m.path, "INBOX")), "set-up: INBOX is in the mount")
        for name, what in ODD_NAMES:
            before = server_mailboxes(c)
            try:
                os.mkdir(os.path.join(m.path, name))
                err = None
            except OSError as e:
                err = e
            if not ok(err is None, "mkdir %r (%s) succeeds" % (name, what), str(err)):
                continue
            check_added(c, dc, before, [name], "mkdir %r" % name)
            ok(name in listing(m.path), "the root listing shows %r at once" % name,
               str(listing(m.path)))
            ok(examine_count(c, name) == 0, "EXAMINE %r on the server works: 0 messages" % name)


def examine_count(c, name):
    from test_write_lib import examine
    try:
        return examine(c, name)
    except RuntimeError as e:
        return str(e)


def test_rmdir(dc):
    c = dc.client()
    for n in ("Leer", "Voll", "Eltern", "Eltern/Kind", "Entwürfe", 'Mit "Zitat"'):
        create(c, n, exist_ok=True)  # test_mkdir_encoded_names made Entwürfe already
    full = [append(c, "Voll", new_message("voll%d" % i)[0]) for i in range(2)]
    inbox_uid = append(c, "INBOX", new_message("inbox")[0])
    with mount(dc) as m:
        r = m.path
        need(wait_listed(r, ["Leer", "Voll", "Eltern", "Entwürfe", 'Mit "Zitat"', "INBOX"]),
             "set-up: the mailboxes are in the mount", str(listing(r)))
        need(wait_listed(os.path.join(r, "Voll"), ["%d.eml" % u for u in full]),
             "set-up: Voll lists its 2 messages")
        before = server_mailboxes(c)
        os.rmdir(os.path.join(r, "Leer"))
        after = server_mailboxes(c)
        ok(before - after == {"Leer"} and after <= before,
           "rmdir Leer: the server no longer has Leer, and nothing else went",
           "removed %s, added %s" % (sorted(before - after), sorted(after - before)))
        ok("Leer" not in listing(r), "the root listing drops Leer at once", str(listing(r)))

        expect_errno(errno.ENOTEMPTY, "rmdir Voll (2 messages)", os.rmdir, os.path.join(r, "Voll"))
        ok("Voll" in server_mailboxes(c) and server_uids(c, "Voll") == full,
           "... Voll and its 2 messages are still on the server")
        ok(eml_uids(listing(os.path.join(r, "Voll"))) == full, "... and in the mount")

        expect_errno(errno.ENOTEMPTY, "rmdir Eltern (has the child Kind)", os.rmdir,
                     os.path.join(r, "Eltern"))
        ok({"Eltern", "Eltern/Kind"} <= server_mailboxes(c), "... Eltern and Eltern/Kind remain")
        ok(examine_count(c, "Eltern") == 0,
           "... and Eltern is still a selectable mailbox (Dovecot would DELETE it to \\Noselect)",
           "EXAMINE Eltern: %s" % examine_count(c, "Eltern"))

        before = server_mailboxes(c)
        os.rmdir(os.path.join(r, "Eltern", "Kind"))
        os.rmdir(os.path.join(r, "Eltern"))
        after = server_mailboxes(c)
        ok(before - after == {"Eltern", "Eltern/Kind"} and after <= before,
           "rmdir Eltern/Kind, then rmdir Eltern: both gone from the server",
           "removed %s, added %s" % (sorted(before - after), sorted(after - before)))
        ok("Eltern" not in listing(r), "the root listing drops Eltern at once")

        for name in ("Entwürfe", 'Mit "Zitat"'):
            before = server_mailboxes(c)
            res = run(["rmdir", os.path.join(r, name)])
            ok(res.returncode == 0, "rmdir %r succeeds" % name, res.stderr.strip())
            after = server_mailboxes(c)
            ok(before - after == {mutf7(name)} and after <= before,
               "rmdir %r: exactly %r left the server" % (name, mutf7(name)),
               "removed %s, added %s" % (sorted(before - after), sorted(after - before)))
            ok(name not in listing(r), "the root listing drops %r at once" % name)

        e = None
        try:
            os.rmdir(os.path.join(r, "INBOX"))
        except OSError as ex:
            e = ex.errno
        ok(e is not None, "rmdir INBOX fails (%s)" % errno.errorcode.get(e, e),
           "rmdir INBOX succeeded")
        ok("INBOX" in server_mailboxes(c) and inbox_uid in server_uids(c, "INBOX"),
           "... INBOX and its message are still on the server")
        ok("INBOX" in listing(r), "... and INBOX is still in the mount")


def test_rm_rf_just_filled(dc):
    """rm -rf of a mailbox a cp filled a moment before: every message is
    expunged by whichever connection was free, and rmdir must not count
    them again from a connection whose selection still had one (STATUS of
    a session's selected mailbox answers from its own view). The mkdir of
    the next round comes right after that DELETE, when Dovecot 2.3 often
    leaves the new mailbox out of LIST in every session already open (5 of
    12 runs failed with EIO before the daemon trusted its own CREATE)."""
    c = dc.client()
    with mount(dc) as m:
        for rnd in range(3):
            name = "Gefuellt%d" % rnd
            d = os.path.join(m.path, name)
            os.mkdir(d)
            for i in range(40):
                with open(os.path.join(d, "m%02d.eml" % i), "wb") as f:
                    f.write(crlf(new_message("rmrf %d %d" % (rnd, i))[0]))
            ok(len(server_uids(c, name)) == 40, "%s: the server has the 40 copied messages" % name)
            res = run(["rm", "-rf", d])
            ok(res.returncode == 0, "rm -rf %s succeeds" % name, res.stderr.strip())
            ok(name not in server_mailboxes(c), "... and the server no longer has %s" % name)


def test_rename_dirs(dc):
    c = dc.client()
    for n in ("Alt", "Quelle", "Quelle/Kind", "Solo"):
        create(c, n)
    alt = {}
    for i in range(2):
        data, mid = new_message("alt%d" % i)
        append(c, "Alt", data)
        alt[mid] = data
    kind_data, kind_mid = new_message("kind")
    append(c, "Quelle/Kind", kind_data)
    with mount(dc) as m:
        r = m.path
        need(wait_listed(r, ["Alt", "Quelle", "Solo"]), "set-up: the mailboxes are in the mount",
             str(listing(r)))

        before = server_mailboxes(c)
        os.rename(os.path.join(r, "Alt"), os.path.join(r, "Neu"))
        after = server_mailboxes(c)
        ok("Alt" not in after and "Neu" in after and after - before == {"Neu"}
           and before - after == {"Alt"},
           "rename(2) Alt -> Neu: the server has Neu instead of Alt",
           "added %s, removed %s" % (sorted(after - before), sorted(before - after)))
        got = server_messages(c, "Neu")
        ok(sorted(v["body"] for v in got.values()) == sorted(crlf(d) for d in alt.values()),
           "Neu holds Alt's 2 messages, byte-identical")
        ok("Alt" not in listing(r) and "Neu" in listing(r), "the root listing shows Neu, not Alt, at once",
           str(listing(r)))
        ok(eml_uids(listing(os.path.join(r, "Neu"))) == sorted(got),
           "Neu lists the server's UIDs at once", "%s vs %s" % (listing(os.path.join(r, "Neu")),
                                                               sorted(got)))

        target = "Ablage für 2025"
        before = server_mailboxes(c)
        res = run(["mv", os.path.join(r, "Neu"), os.path.join(r, target)])
        ok(res.returncode == 0 and not res.stderr, "mv Neu %r: exit 0" % target, res.stderr.strip())
        after = server_mailboxes(c)
        ok(after - before == {mutf7(target)} and before - after == {"Neu"},
           "mv Neu -> %r: on the wire %r" % (target, mutf7(target)),
           "added %s, removed %s" % (sorted(after - before), sorted(before - after)))
        ok(len(server_uids(c, target)) == 2, "%r holds the 2 messages" % target)
        ok(eml_uids(listing(os.path.join(r, target))) == server_uids(c, target),
           "the mount lists them under %r at once" % target)

        target2 = 'Ziel "Q"'
        before = server_mailboxes(c)
        os.rename(os.path.join(r, "Quelle"), os.path.join(r, target2))
        after = server_mailboxes(c)
        want_new = {mutf7(target2), mutf7(target2) + "/Kind"}
        ok(after - before == want_new and before - after == {"Quelle", "Quelle/Kind"},
           "rename(2) Quelle (with child Kind) -> %r: the child moves along" % target2,
           "added %s, removed %s" % (sorted(after - before), sorted(before - after)))
        ok(len(server_find(c, target2 + "/Kind", kind_mid)) == 1,
           "the child's message is in %r/Kind" % target2)
        ok(listing(os.path.join(r, target2)) == ["Kind"] and
           len(eml_uids(listing(os.path.join(r, target2, "Kind")))) == 1,
           "the mount shows %r/Kind with its message at once" % target2)

        before = server_mailboxes(c)
        os.rename(os.path.join(r, "Solo"), os.path.join(r, target, "Solo"))
        after = server_mailboxes(c)
        ok(after - before == {mutf7(target + "/Solo")} and before - after == {"Solo"},
           "rename(2) Solo into %r/: RENAME to %r" % (target, mutf7(target + "/Solo")),
           "added %s, removed %s" % (sorted(after - before), sorted(before - after)))
        ok("Solo" not in listing(r) and "Solo" in listing(os.path.join(r, target)),
           "the mount shows Solo under %r at once" % target)


if __name__ == "__main__":
    main([test_mkdir, test_mkdir_encoded_names, test_rmdir, test_rm_rf_just_filled, test_rename_dirs],
         doc=__doc__)
