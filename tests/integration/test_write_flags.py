#!/usr/bin/env python3
"""Write path, flags: user.imap.flags replace (setfattr -v / setxattr), add and
remove (+/- words), clear (setfattr -x), invalid values -> EINVAL with no
change, read-only attributes -> EPERM. The server side is read with an
independent imaplib client right after each syscall (no waiting), and the
mount's getxattr must show the new value at once."""

import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_write_lib import (append, create, expect_errno, fmt, main, mount, msg_path,  # noqa: E402
                            need, new_message, note, ok, run, server_flags, server_uids,
                            store, wait_listed, xflags)

F = "user.imap.flags"


def setup_message(dc, mailbox, flags, tag):
    """A message APPENDed by the independent client, visible in a mount."""
    c = dc.client()
    if mailbox != "INBOX":
        create(c, mailbox)
    data, mid = new_message(tag)
    uid = append(c, mailbox, data, flags)
    return c, uid


def check_both(c, mailbox, uid, path, want, what):
    """Server (independent client) and mount (getxattr) both show `want`."""
    got = server_flags(c, mailbox, uid)
    ok(got == want, "%s: the server has %s" % (what, fmt(want)), "server has %s" % fmt(got))
    try:
        mine = xflags(path)
    except OSError as e:
        mine = "getxattr error %s" % e
    ok(mine == want, "%s: getxattr right after shows %s" % (what, fmt(want)),
       "getxattr shows %s" % fmt(mine))


def test_replace(dc):
    c, uid = setup_message(dc, "FlagsReplace", "\\Answered $Old", "replace")
    with mount(dc) as m:
        p = msg_path(m, "FlagsReplace", uid)
        need(wait_listed(os.path.dirname(p), [os.path.basename(p)]),
             "set-up: %s is listed in the mount" % p)
        ok(xflags(p) == {"\\Answered", "$Old"}, "the mount shows the initial flags {\\Answered $Old}",
           "getxattr shows %s" % fmt(xflags(p)))

        r = run(["setfattr", "-n", F, "-v", "\\Seen \\Flagged $Work", p])
        ok(r.returncode == 0, "setfattr -v '\\Seen \\Flagged $Work' succeeds", r.stderr.strip())
        check_both(c, "FlagsReplace", uid, p, {"\\Seen", "\\Flagged", "$Work"}, "replace")

        os.setxattr(p, F, b"$Only")
        check_both(c, "FlagsReplace", uid, p, {"$Only"}, "setxattr '$Only' replaces all")

        os.setxattr(p, F, b"\\Draft\t\\Answered  $Two")
        check_both(c, "FlagsReplace", uid, p, {"\\Draft", "\\Answered", "$Two"},
                   "setxattr with tab and double space between words")

        os.setxattr(p, F, b"")
        check_both(c, "FlagsReplace", uid, p, set(), "setxattr of the empty value replaces with none")
        ok(server_uids(c, "FlagsReplace") == [uid], "the message is still there, same UID",
           "UIDs now %s" % server_uids(c, "FlagsReplace"))


def test_add_remove(dc):
    c, uid = setup_message(dc, "FlagsAdd", "\\Seen $Work", "addremove")
    with mount(dc) as m:
        p = msg_path(m, "FlagsAdd", uid)
        need(wait_listed(os.path.dirname(p), [os.path.basename(p)]),
             "set-up: %s is listed in the mount" % p)
        r = run(["setfattr", "-n", F, "-v", "+\\Flagged -\\Seen", p])
        ok(r.returncode == 0, "setfattr -v '+\\Flagged -\\Seen' succeeds", r.stderr.strip())
        check_both(c, "FlagsAdd", uid, p, {"\\Flagged", "$Work"}, "'+\\Flagged -\\Seen' on {\\Seen $Work}")

        os.setxattr(p, F, b"+$Tag1 +$Tag2")
        check_both(c, "FlagsAdd", uid, p, {"\\Flagged", "$Work", "$Tag1", "$Tag2"}, "'+$Tag1 +$Tag2'")

        os.setxattr(p, F, b"-$Tag1 -$Work")
        check_both(c, "FlagsAdd", uid, p, {"\\Flagged", "$Tag2"}, "'-$Tag1 -$Work'")

        os.setxattr(p, F, b"-\\Seen")
        check_both(c, "FlagsAdd", uid, p, {"\\Flagged", "$Tag2"},
                   "'-\\Seen' when \\Seen is not set changes nothing")

        os.setxattr(p, F, b"+\\Flagged")
        check_both(c, "FlagsAdd", uid, p, {"\\Flagged", "$Tag2"},
                   "'+\\Flagged' when already set changes nothing")


def test_add_keeps_other_clients_flags(dc):
    """+/- are applied on the server (UID STORE +FLAGS/-FLAGS), not computed
    from a possibly stale cached value: a keyword another client just set
    survives."""
    c, uid = setup_message(dc, "FlagsOther", "\\Seen", "other")
    with mount(dc) as m:
        p = msg_path(m, "FlagsOther", uid)
        need(wait_listed(os.path.dirname(p), [os.path.basename(p)]),
             "set-up: %s is listed in the mount" % p)
        need(xflags(p) == {"\\Seen"}, "the mount shows {\\Seen}", "getxattr: %s" % fmt(xflags(p)))
        store(c, "FlagsOther", uid, "+FLAGS.SILENT", "$Other")
        note("another client added $Other; at once, through the mount: +\\Flagged")
        os.setxattr(p, F, b"+\\Flagged")
        got = server_flags(c, "FlagsOther", uid)
        ok(got == {"\\Seen", "$Other", "\\Flagged"},
           "'+\\Flagged' keeps the keyword another client set just before",
           "server has %s" % fmt(got))
        os.setxattr(p, F, b"-\\Seen")
        got = server_flags(c, "FlagsOther", uid)
        ok(got == {"$Other", "\\Flagged"}, "'-\\Seen' removes only \\Seen",
           "server has %s" % fmt(got))
        mine = xflags(p)
        ok(mine == {"$Other", "\\Flagged"},
           "getxattr after the change shows the server's value, other client's keyword included",
           "getxattr shows %s" % fmt(mine))


def test_clear(dc):
    c, uid = setup_message(dc, "FlagsClear", "\\Seen \\Flagged \\Answered $Work", "clear")
    with mount(dc) as m:
        p = msg_path(m, "FlagsClear", uid)
        need(wait_listed(os.path.dirname(p), [os.path.basename(p)]),
             "set-up: %s is listed in the mount" % p)
        r = run(["setfattr", "-x", F, p])
        ok(r.returncode == 0, "setfattr -x user.imap.flags succeeds", r.stderr.strip())
        check_both(c, "FlagsClear", uid, p, set(), "setfattr -x clears every flag")

        os.setxattr(p, F, b"\\Seen $Back")
        check_both(c, "FlagsClear", uid, p, {"\\Seen", "$Back"}, "flags set again after a clear")
        os.removexattr(p, F)
        check_both(c, "FlagsClear", uid, p, set(), "removexattr clears them again")


INVALID = [
    (b"\\Bogus", "a system flag that does not exist"),
    (b"\\Recent", "\\Recent (not in PERMANENTFLAGS)"),
    (b"\\*", "\\* itself"),
    (b"a(b", "a keyword with '('"),
    (b"bad\x01word", "a keyword with a control character"),
    (b'quo"te', "a keyword with a double quote"),
    (b"br{ace", "a keyword with '{'"),
    (b"\\Seen \\Bogus", "a valid flag next to an invalid one"),
    (b"+\\Bogus", "adding a system flag that does not exist"),
    (b"+$Fine -a(b", "an add/remove list with one malformed word"),
]


def test_invalid(dc):
    c, uid = setup_message(dc, "FlagsBad", "\\Seen $Keep", "invalid")
    want = {"\\Seen", "$Keep"}
    with mount(dc) as m:
        p = msg_path(m, "FlagsBad", uid)
        need(wait_listed(os.path.dirname(p), [os.path.basename(p)]),
             "set-up: %s is listed in the mount" % p)
        for value, what in INVALID:
            expect_errno(errno.EINVAL, "setxattr %r (%s)" % (value.decode(), what),
                         os.setxattr, p, F, value)
            got = server_flags(c, "FlagsBad", uid)
            ok(got == want, "  ... and the server's flags are unchanged", "server has %s" % fmt(got))
            mine = xflags(p)
            ok(mine == want, "  ... and getxattr is unchanged", "getxattr shows %s" % fmt(mine))
        r = run(["setfattr", "-n", F, "-v", "\\Bogus", p])
        ok(r.returncode != 0 and "Invalid argument" in r.stderr,
           "setfattr -v '\\Bogus' fails with 'Invalid argument'",
           "exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
        ok(server_flags(c, "FlagsBad", uid) == want, "  ... and the server's flags are unchanged")


def test_readonly_attributes(dc):
    c, uid = setup_message(dc, "FlagsRO", "\\Seen", "readonly")
    with mount(dc) as m:
        p = msg_path(m, "FlagsRO", uid)
        need(wait_listed(os.path.dirname(p), [os.path.basename(p)]),
             "set-up: %s is listed in the mount" % p)
        for name in ("uid", "uidvalidity", "internaldate", "modseq"):
            attr = "user.imap." + name
            before = os.getxattr(p, attr)
            expect_errno(errno.EPERM, "setxattr %s (another value)" % attr, os.setxattr, p, attr,
                         b"2001-01-01T00:00:00Z" if name == "internaldate" else b"4242")
            expect_errno(errno.EPERM, "setxattr %s (its own value)" % attr, os.setxattr, p, attr,
                         before)
            expect_errno(errno.EPERM, "removexattr %s" % attr, os.removexattr, p, attr)
            after = os.getxattr(p, attr)
            ok(after == before, "  ... %s still reads %r" % (attr, before.decode()),
               "now %r" % after)
        r = run(["setfattr", "-n", "user.imap.uid", "-v", "7", p])
        ok(r.returncode != 0 and "Operation not permitted" in r.stderr,
           "setfattr -n user.imap.uid fails with 'Operation not permitted'",
           "exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
        ok(server_uids(c, "FlagsRO") == [uid] and server_flags(c, "FlagsRO", uid) == {"\\Seen"},
           "the server still has the message, same UID, same flags")


def test_nested_nonascii_mailbox(dc):
    c = dc.client()
    create(c, "Archiv")
    c, uid = setup_message(dc, "Archiv/Entwürfe", "", "nested")
    with mount(dc) as m:
        p = msg_path(m, "Archiv/Entwürfe", uid)
        need(wait_listed(os.path.dirname(p), [os.path.basename(p)]),
             "set-up: %s is listed in the mount" % p)
        os.setxattr(p, F, b"\\Flagged $Entwurf")
        check_both(c, "Archiv/Entwürfe", uid, p, {"\\Flagged", "$Entwurf"},
                   "replace in the nested mailbox Archiv/Entwürfe")
        os.setxattr(p, F, b"+\\Seen")
        check_both(c, "Archiv/Entwürfe", uid, p, {"\\Flagged", "$Entwurf", "\\Seen"},
                   "add in the nested mailbox Archiv/Entwürfe")


if __name__ == "__main__":
    main([test_replace, test_add_remove, test_add_keeps_other_clients_flags, test_clear,
          test_invalid, test_readonly_attributes, test_nested_nonascii_mailbox], doc=__doc__)
