#!/usr/bin/env python3
"""smtpd side by side with Postfix: replay SMTP dialogues against a throwaway
Postfix and a corepost started with the same main.cf settings, and print every
reply that differs. Run by hand (not in CI); needs root and Postfix installed.

    cargo build -p corepost
    sudo tests/compat/compare.py [--corepost target/debug/corepost] [--only NAME] [--keep]

Each profile is a set of main.cf settings and the dialogues run under it. A
dialogue is a list of steps; a step is what the client sends in one write
(several lines = pipelined commands) and the replies it collects, one per line
sent (a DATA step's content counts as one). Queue ids are masked; nothing else
is. Every server listens on 127.0.0.1 only; both deliver nothing (the discard
transport) and look nothing up in DNS.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

POSTFIX_PORT = 22625
COREPOST_PORT = 22626

# Settings both servers get.
COMMON = """\
myhostname = mx.example.com
mydomain = example.com
myorigin = $mydomain
mydestination = $myhostname, localhost, example.com
mynetworks = 192.0.2.0/24
relay_domains = relay.test
local_recipient_maps = inline:{ alice=1, postmaster=1, root=1 }
alias_maps =
alias_database =
smtpd_banner = $myhostname ESMTP
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_error_sleep_time = 0
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
local_transport = discard:
relay_transport = discard:
default_transport = discard:
"""

EHLO = "EHLO client.example\r\n"
MAIL = "MAIL FROM:<a@example.org>\r\n"
RCPT = "RCPT TO:<alice@example.com>\r\n"

# (profile name, extra main.cf lines, [(dialogue name, [steps])])
PROFILES = [
    ("defaults", "", [
        ("unknown commands", [EHLO, "FROB\r\n", "HELP\r\n", "EXPN root\r\n", "\r\n", "QUIT\r\n"]),
        ("no brackets", [EHLO, "MAIL FROM:a@example.org\r\n", "RCPT TO:alice@example.com\r\n", "QUIT\r\n"]),
        ("address syntax", [EHLO, "MAIL FROM:<a b@example.com>\r\n", "MAIL FROM:<a@b..example>\r\n",
                            "MAIL FROM:<a@example.org\r\n", MAIL, "RCPT TO:<a@b..c>\r\n", "RCPT TO:<a@[1.2.3]>\r\n",
                            "RCPT TO:\r\n", "MAIL FROM:\r\n", "QUIT\r\n"]),
        ("repeated parameters", [EHLO, "MAIL FROM:<a@example.org> RET=FULL RET=HDRS\r\n",
                                 "MAIL FROM:<a@example.org> ENVID=x ENVID=y\r\n",
                                 "MAIL FROM:<a@example.org> RET=BAD\r\n",
                                 "MAIL FROM:<a@example.org> FOO=1\r\n",
                                 "MAIL FROM:<a@example.org> =x\r\n",
                                 "MAIL FROM:<a@example.org> SIZE=10 SIZE=20\r\n", "RSET\r\n",
                                 MAIL, "RCPT TO:<alice@example.com> NOTIFY=NEVER NOTIFY=SUCCESS\r\n",
                                 "RCPT TO:<alice@example.com> ORCPT=rfc822;a@b ORCPT=rfc822;c@d\r\n",
                                 "RCPT TO:<alice@example.com> NOTIFY=BAD\r\n",
                                 "RCPT TO:<alice@example.com> ORCPT=bad\r\n", "QUIT\r\n"]),
        ("unqualified", ["HELO x\r\n", "MAIL FROM:<user>\r\n", "RCPT TO:<nobody>\r\n", "RCPT TO:<alice>\r\n",
                         "RCPT TO:<Postmaster>\r\n", "RCPT TO:<alice@mx>\r\n", "DATA\r\n",
                         "Subject: x\r\n\r\nbody\r\n.\r\n", "QUIT\r\n"]),
        ("vrfy", ["HELO x\r\n", "VRFY\r\n", "VRFY alice\r\n", "VRFY <alice>\r\n", "VRFY alice@example.com\r\n",
                  "VRFY nobody\r\n", "VRFY <nobody@example.com>\r\n", "VRFY x@foreign.example\r\n",
                  "VRFY x@relay.test\r\n", "VRFY <>\r\n", "VRFY a b c\r\n", "VRFY postmaster\r\n", "QUIT\r\n"]),
        ("etrn", ["ETRN relay.test\r\n", "HELO x\r\n", "ETRN\r\n", "ETRN relay.test\r\n", "ETRN foo.test\r\n",
                  "ETRN @relay.test\r\n", "ETRN #relay.test\r\n", "ETRN a..b\r\n", "ETRN relay.test x\r\n",
                  MAIL, "ETRN relay.test\r\n", "QUIT\r\n"]),
        ("pipelining after HELO", ["HELO x\r\n" + MAIL + RCPT + "DATA\r\n", ".\r\n", "QUIT\r\n"]),
        ("pipelining after EHLO", [EHLO, MAIL + RCPT + "DATA\r\n", ".\r\n", "QUIT\r\n"]),
        ("bare LF on a command", ["HELO x\r\n", "NOOP\n", "QUIT\r\n"]),
        ("noop and rset", [EHLO, "NOOP\r\n", "NOOP x\r\n", "RSET\r\n", "RSET x\r\n", "QUIT\r\n"]),
        ("sequence errors", ["RCPT TO:<alice@example.com>\r\n", "DATA\r\n", "MAIL FROM:<a@example.org>\r\n",
                             "MAIL FROM:<a@example.org>\r\n", "DATA\r\n", "RCPT TO:<x@foreign.example>\r\n",
                             "DATA\r\n", "QUIT\r\n"]),
        ("size and dsn", [EHLO, "MAIL FROM:<a@example.org> SIZE=999999999\r\n",
                          "MAIL FROM:<a@example.org> SIZE=x\r\n", "MAIL FROM:<a@example.org> BODY=9BIT\r\n",
                          "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=abc\r\n",
                          "RCPT TO:<alice@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.com\r\n",
                          "RCPT TO:<root@example.com> NOTIFY=NEVER,DELAY\r\n", "QUIT\r\n"]),
        ("bdat", [EHLO, MAIL, RCPT, "BDAT 5\r\nab\r\nc", "BDAT 0 LAST\r\n", "BDAT x\r\n", "QUIT\r\n"]),
        ("helo syntax", ["HELO\r\n", "EHLO\r\n", "HELO a b\r\n", "QUIT\r\n"]),
        ("relay", [EHLO, MAIL, "RCPT TO:<x@foreign.example>\r\n", "RCPT TO:<x@relay.test>\r\n",
                   "RCPT TO:<nobody@example.com>\r\n", "QUIT\r\n"]),
    ]),
    ("strict", "strict_rfc821_envelopes = yes\n", [
        ("no brackets", [EHLO, "MAIL FROM:a@example.org\r\n", "MAIL FROM:<a@example.org> junk\r\n",
                         "MAIL FROM: <a@example.org>\r\n", "RCPT TO:alice@example.com\r\n", RCPT, "QUIT\r\n"]),
    ]),
    ("restrictions", "smtpd_recipient_restrictions = reject_non_fqdn_sender, reject_non_fqdn_recipient\n"
                     "smtpd_data_restrictions = reject_unauth_pipelining\n"
                     "smtpd_noop_commands = XYZZY\n", [
        ("non-fqdn sender", ["HELO x\r\n", "MAIL FROM:<user>\r\n", RCPT, "QUIT\r\n"]),
        ("non-fqdn recipient", ["HELO x\r\n", MAIL, "RCPT TO:<alice>\r\n", "QUIT\r\n"]),
        ("reject_unauth_pipelining", ["HELO x\r\n" + MAIL + RCPT + "DATA\r\n", "QUIT\r\n"]),
        ("legal pipelining", [EHLO, MAIL + RCPT + "DATA\r\n", ".\r\n", "QUIT\r\n"]),
        ("noop commands", ["xyzzy 1\r\n", "XYZZY\r\n", "QUIT\r\n"]),
    ]),
    ("forbid", "smtpd_forbid_unauth_pipelining = yes\nsmtpd_forbid_bare_newline = reject\n"
               "smtpd_forbid_bare_newline_exclusions =\n", [
        ("noop pipelined", [EHLO, "NOOP\r\n" + MAIL]),
        ("rset pipelined", [EHLO, "RSET\r\n" + MAIL, "QUIT\r\n"]),
        ("vrfy pipelined", [EHLO, "VRFY alice\r\n" + MAIL]),
        ("etrn pipelined", [EHLO, "ETRN relay.test\r\nNOOP\r\n", "QUIT\r\n"]),
        ("pipelined without EHLO", ["HELO x\r\n", "RSET\r\nNOOP\r\n"]),
        ("content after DATA", [EHLO, MAIL + RCPT + "DATA\r\n.\r\nQUIT\r\n"]),
        ("bare LF", ["HELO x\r\n", "NOOP\n"]),
        ("bare LF in HELO", ["HELO x\nMAIL FROM:<a@example.org>\r\n"]),
        ("bare LF in DATA", ["HELO x\r\n", MAIL, RCPT, "DATA\r\n", "Subject: x\n\nbody\r\n.\r\n", "QUIT\r\n"]),
    ]),
    ("xclient", "smtpd_authorized_xclient_hosts = 127.0.0.1\n"
                "smtpd_client_restrictions = check_client_access inline:{{10.1.2.3=REJECT go away}}\n", [
        ("xclient", [EHLO, "XCLIENT\r\n", "XCLIENT FOO=bar\r\n", "XCLIENT NAME=a+20b\r\n",
                     "XCLIENT ADDR=bogus\r\n", "XCLIENT PORT=x\r\n", "XCLIENT PROTO=FOO\r\n",
                     "XCLIENT NAME=spike.example ADDR=10.1.2.3 PORT=1234 LOGIN=[UNAVAILABLE]\r\n",
                     "EHLO y\r\n", MAIL, "XCLIENT ADDR=192.0.2.7\r\n", RCPT, "RSET\r\n",
                     "XCLIENT ADDR=127.0.0.1\r\n", "QUIT\r\n"]),
        ("xclient name only", ["XCLIENT name=x.example addr=10.1.2.3\r\n", MAIL, RCPT, "QUIT\r\n"]),
    ]),
    ("limits", "smtpd_recipient_limit = 2\nsmtpd_recipient_overshoot_limit = 3\nsmtpd_hard_error_limit = 3\n"
               "disable_vrfy_command = yes\nsmtpd_etrn_restrictions = reject\n", [
        ("overshoot", ["HELO x\r\n", MAIL] + [RCPT] * 8 + ["QUIT\r\n"]),
        ("vrfy disabled", ["HELO x\r\n", "VRFY alice\r\n", "QUIT\r\n"]),
        ("etrn restricted", ["ETRN relay.test\r\n", "HELO x\r\n", "ETRN relay.test\r\n", "QUIT\r\n"]),
        ("hard error limit", ["FROB\r\n", "FROB\r\n", "FROB\r\n", "QUIT\r\n"]),
    ]),
]


def wait_port(port, proc=None, secs=20):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"server on port {port} exited with {proc.returncode}")
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def talk(port, steps, wait=3.0):
    """The replies to each step, as lists of reply texts."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    buf = b""
    eof = False

    def take():
        """Complete replies already received."""
        nonlocal buf
        got = []
        while m := re.search(rb"^\d{3}(?: [^\n]*)?\n", buf, re.M):
            got.append(buf[:m.end()].decode(errors="replace"))
            buf = buf[m.end():]
        return got

    def read(n):
        nonlocal buf, eof
        got = take()
        s.settimeout(wait)
        while len(got) < n and not eof:
            try:
                d = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not d:
                eof = True
            buf += d
            got += take()
        return got

    out = [("<connect>", read(1))]
    data_next = False
    for step in steps:
        raw = step.encode()
        if eof:
            out.append((step, ["<closed>"]))
            continue
        try:
            s.sendall(raw)
        except OSError:
            out.append((step, ["<closed>"]))
            eof = True
            continue
        n = 1 if data_next else max(1, raw.count(b"\n"))
        got = read(n)
        # Replies beyond the expected ones (a 421 after an error), or a
        # hang-up, are part of the answer.
        if not eof:
            s.settimeout(0.15)
            try:
                more = s.recv(65536)
                eof = not more
                buf += more
            except (socket.timeout, ConnectionResetError):
                pass
            got += take()
        if eof:
            got.append("<closed>")
        out.append((step, got))
        data_next = raw.rstrip().endswith(b"DATA") and any(g.startswith("354") for g in got)
    s.close()
    return out


# Deliberate differences, masked unless --all: corepost offers BINARYMIME
# (RFC 3030) besides CHUNKING.
KNOWN = [("250-CHUNKING\r\n250 BINARYMIME\r\n", "250 CHUNKING\r\n")]


def normalise(text, known=True):
    text = re.sub(r"queued as [0-9A-Z]+", "queued as ID", text)
    if known:
        for ours, theirs in KNOWN:
            text = text.replace(ours, theirs)
    return text


def port_free(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return
    raise SystemExit(f"compare.py: something already listens on 127.0.0.1:{port}")


def setup_postfix(root, extra):
    port_free(POSTFIX_PORT)
    d = os.path.join(root, "postfix")
    etc = os.path.join(d, "etc")
    for sub in ("etc", "queue", "data"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    shutil.chown(os.path.join(d, "data"), "postfix")
    with open(os.path.join(etc, "main.cf"), "w") as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = {d}/maillog
maillog_file_prefixes = {root}
biff = no
{COMMON}{extra}""")
    with open("/etc/postfix/master.cf") as src, open(os.path.join(etc, "master.cf"), "w") as dst:
        for line in src:
            fields = line.split()
            if line.startswith("#") or line[:1].isspace() or len(fields) < 8:
                dst.write(line)
                continue
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{POSTFIX_PORT}"
            fields[4] = "n"  # no chroot: the temporary queue has no chroot tree
            dst.write(" ".join(fields) + "\n")
    subprocess.run(["postfix", "-c", etc, "start"], check=True, capture_output=True)
    wait_port(POSTFIX_PORT)
    return etc


def stop_postfix(etc):
    subprocess.run(["postfix", "-c", etc, "stop"], capture_output=True)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", POSTFIX_PORT), timeout=0.2).close()
            time.sleep(0.1)
        except OSError:
            return


def setup_corepost(root, binary, extra):
    port_free(COREPOST_PORT)
    d = os.path.join(root, "corepost")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "main.cf"), "w") as f:
        f.write(f"""queue_directory = {d}/spool
mail_owner = root
corepost_cores = 1
maillog_file = {d}/maillog
maillog_file_prefixes = /
{COMMON}{extra}""")
    with open(os.path.join(d, "master.cf"), "w") as f:
        f.write(f"127.0.0.1:{COREPOST_PORT} inet n - n - - smtpd\ndiscard unix - - n - - discard\n")
    proc = subprocess.Popen([binary, "run", "-c", d], stdin=subprocess.DEVNULL,
                            env={k: v for k, v in os.environ.items() if k != "COREPOST_CONFIG_DIR"})
    wait_port(COREPOST_PORT, proc)
    return proc


def stop_corepost(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--corepost", default=os.path.join(repo, "target", "debug", "corepost"))
    ap.add_argument("--only", help="run only the profile with this name")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--all", action="store_true", help="do not mask the known, deliberate differences")
    ap.add_argument("-v", "--verbose", action="store_true", help="print matching steps too")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("compare.py: needs root (Postfix)")
    root = tempfile.mkdtemp(prefix="smtpd-compare.")
    os.chmod(root, 0o755)
    total = differing = 0
    try:
        for name, extra, dialogues in PROFILES:
            if args.only and args.only != name:
                continue
            shutil.rmtree(os.path.join(root, "postfix"), ignore_errors=True)
            shutil.rmtree(os.path.join(root, "corepost"), ignore_errors=True)
            etc = setup_postfix(root, extra)
            proc = setup_corepost(root, args.corepost, extra)
            try:
                for title, steps in dialogues:
                    pf = talk(POSTFIX_PORT, steps)
                    cp = talk(COREPOST_PORT, steps)
                    diffs = []
                    for (step, a), (_, b) in zip(pf, cp):
                        total += 1
                        a = [normalise(x) for x in a]
                        b = [normalise(x, not args.all) for x in b]
                        if a != b:
                            diffs.append((step, a, b))
                        elif args.verbose:
                            print(f"  = {step!r}: {''.join(a).strip()!r}")
                    differing += len(diffs)
                    print(f"[{name}] {title}: {'same' if not diffs else f'{len(diffs)} differing'}")
                    for step, a, b in diffs:
                        print(f"    >> {step!r}")
                        print(f"       postfix : {''.join(a).strip()!r}")
                        print(f"       corepost: {''.join(b).strip()!r}")
            finally:
                stop_corepost(proc)
                stop_postfix(etc)
        masked = "" if args.all else " (known deliberate differences masked; --all shows them)"
        print(f"\n{total} steps compared, {differing} differ{masked}")
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
