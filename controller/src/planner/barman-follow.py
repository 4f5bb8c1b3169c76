#!/usr/bin/python3
# Managed by tpa: changes made here are overwritten by the next deploy.
"""Keeps Barman's WAL streaming on the live primary, run as the barman user on the Barman host
by deploy's barman stage and by `tpa-controller switchover`.

    barman-follow check SERVER TARGET
    barman-follow follow SERVER TARGET
    barman-follow nudged TARGET BARMAN-COMMAND...
    barman-follow has-backup SERVER

TARGET is the libpq connection string of the live primary without user and dbname (host, port,
passfile, TLS); /etc/barman.d/SERVER.conf already names the same host. `check` exits 0 when the
`barman` slot there is in use, that is when `barman receive-wal SERVER` streams from it.

`follow` makes that true without losing the catalogue, and prints what it did (lines starting `tpa: `, which deploy shows):
1. the running receive-wal (perhaps still on a former primary) is stopped, the complete
   segments it received are archived, and receive-wal is started against TARGET, continuing
   where it stopped: after a switchover or a clean failover the new primary still has that WAL
   and its timeline history leads from there to its own timeline, so the archive has no gap;
2. if that position is not in the new primary's history (a former primary kept writing after
   the failover) the streaming directory is moved aside and streaming starts at the fork point
   of the new primary's timeline, still without a gap while the new primary keeps that segment;
3. failing that, streaming starts at the slot's position and a new backup is taken at once,
   since WAL between the last streamed position and now is not in the archive.

`nudged` runs a Barman command that waits for a WAL segment to reach the archive (switch-wal
--archive, backup --wait) while writing a restore point on the primary every half second, and
exits with its status. Barman archives a streamed segment only once the next segment's
.partial exists (StreamingWalArchiver.get_next_batch); on an idle primary nothing writes into
the next segment until the next checkpoint, so the command would wait that long.

`has-backup` exits 0 when SERVER has a completed backup (a backup.info saying status=DONE):
what `barman show-backup SERVER latest` says, without Barman's start-up time (a third of a
second, three times in every re-deploy).
"""

import binascii
import datetime
import os
import shutil
import subprocess
import sys
import time

HOME = "/var/lib/barman"
BARMAN = "/usr/bin/barman"


def newest_psql():
    """The newest installed major version's psql, which talks to every older server. Not
    /usr/bin/psql: that is Debian's pg_wrapper, a Perl script that costs more CPU than the query
    (most of `check`'s time on a re-deploy)."""
    root = "/usr/lib/postgresql"
    versions = os.listdir(root) if os.path.isdir(root) else []
    for version in sorted((v for v in versions if v.isdigit()), key=int, reverse=True):
        path = "%s/%s/bin/psql" % (root, version)
        if os.access(path, os.X_OK):
            return path
    return "/usr/bin/psql"


PSQL = newest_psql()
SLOT = "barman"
STREAMING_USER = "streaming_barman"
BARMAN_USER = "barman"
# How long receive-wal may take to connect and occupy the slot.
START_TIMEOUT = 30


class Failed(Exception):
    pass


def run(argv, timeout=60):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=HOME)
    except subprocess.TimeoutExpired:
        return 124, "", "timed out after %ss" % timeout
    return p.returncode, p.stdout, p.stderr


def psql(conninfo, sql):
    code, out, err = run([PSQL, "--no-psqlrc", "--no-password", "-At", "-d", conninfo, "-c", sql])
    if code != 0:
        raise Failed("psql: %s" % (err.strip() or out.strip()))
    return out.strip()


def slot_active(target):
    try:
        return (
            psql(
                "%s dbname=postgres user=%s" % (target, BARMAN_USER),
                "select active from pg_replication_slots where slot_name = '%s'" % SLOT,
            )
            == "t"
        )
    except Failed:
        return False


def receivers(server):
    code, out, _ = run(["pgrep", "-u", "barman", "-f", "receive-wal %s$" % server])
    return out.split() if code == 0 else []


def stop(server):
    run([BARMAN, "-q", "receive-wal", "--stop", server])
    deadline = time.monotonic() + 10
    while receivers(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in receivers(server):
        run(["kill", pid])


def start(server, target):
    """Starts receive-wal the way Barman's cron does; True once it occupies the slot."""
    code, out, err = run([BARMAN, "-q", "cron"], timeout=120)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if slot_active(target):
            return True
        if not receivers(server) and time.monotonic() > deadline - START_TIMEOUT + 3:
            # It exited: pg_receivewal refused the position (it would not come back by itself
            # before the next minute's cron).
            return False
        time.sleep(0.3)
    return False


def streaming_dir(server):
    return os.path.join(HOME, server, "streaming")


def log_tail(server, lines=5):
    try:
        with open("/var/log/barman/barman.log") as f:
            mine = [l.rstrip() for l in f if "[%s]" % server in l or server in l]
        return "\n".join(mine[-lines:])
    except OSError:
        return ""


def position(server):
    names = sorted(os.listdir(streaming_dir(server))) if os.path.isdir(streaming_dir(server)) else []
    return names[-1] if names else "nothing"


def move_aside(server):
    """The streaming directory's content, kept (never deleted) beside it."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = os.path.join(HOME, server, "streaming-superseded", stamp)
    os.makedirs(aside, exist_ok=True)
    for name in os.listdir(streaming_dir(server)):
        shutil.move(os.path.join(streaming_dir(server), name), aside)
    return aside


def replication(target, command):
    return psql("%s user=%s replication=true" % (target, STREAMING_USER), command)


def fork_point_segment(target):
    """The name of the segment of the new primary's timeline that holds its fork point, or
    None on timeline 1."""
    identify = replication(target, "IDENTIFY_SYSTEM").split("|")
    timeline = int(identify[1])
    if timeline < 2:
        return None
    history = replication(target, "TIMELINE_HISTORY %d" % timeline).split("|", 1)[1]
    if history.startswith("\\x"):
        history = binascii.unhexlify(history[2:]).decode()
    last = [l for l in history.splitlines() if l.strip() and not l.startswith("#")][-1]
    hi, lo = last.split()[1].split("/")
    lsn = (int(hi, 16) << 32) | int(lo, 16)
    size = int(
        psql(
            "%s dbname=postgres user=%s" % (target, BARMAN_USER),
            "select setting::bigint * (case unit when '8kB' then 8192 when 'MB' then 1048576 "
            "else 1 end) from pg_settings where name = 'wal_segment_size'",
        )
    )
    segno = lsn // size
    per_id = 0x100000000 // size
    return "%08X%08X%08X" % (timeline, segno // per_id, segno % per_id), size


def follow(server, target, host):
    if slot_active(target):
        print("tpa: %s: WAL already streams from %s" % (server, host))
        return 0
    stop(server)
    run([BARMAN, "-q", "archive-wal", server], timeout=600)
    continuing = position(server)
    if start(server, target):
        print("tpa: %s: WAL streams from %s, continuing from %s" % (server, host, continuing))
        return 0
    refused = log_tail(server)
    stop(server)
    aside = move_aside(server)
    fork = fork_point_segment(target)
    if fork is not None:
        name, size = fork
        placeholder = os.path.join(streaming_dir(server), name + ".partial")
        with open(placeholder, "wb") as f:
            f.truncate(size)
        if start(server, target):
            print(
                "tpa: %s: WAL streams from %s from its timeline's fork point (segment %s); what "
                "streamed after %s is in %s (the former primary's diverged WAL)"
                % (server, host, name, continuing, aside)
            )
            return 0
        stop(server)
        if os.path.exists(placeholder):
            os.remove(placeholder)
    if not start(server, target):
        raise Failed(
            "receive-wal does not stream from %s:\n%s\n%s" % (host, refused, log_tail(server))
        )
    print(
        "tpa: %s: WAL streams from %s from its current position: the WAL after %s is not in the "
        "archive (%s), so a new backup is taken now" % (server, host, continuing, aside)
    )
    code, out, err = run(
        [BARMAN, "backup", "--immediate-checkpoint", "--wait", server], timeout=3600
    )
    sys.stdout.write(out)
    if code != 0:
        raise Failed("barman backup %s failed: %s" % (server, err.strip() or out.strip()))
    return 0


def nudged(target, command):
    conninfo = "%s dbname=postgres user=%s" % (target, BARMAN_USER)
    child = subprocess.Popen(command, cwd=HOME)
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        try:
            psql(conninfo, "select pg_create_restore_point('tpa_barman_wal_nudge')")
        except Failed:
            pass


def has_backup(server):
    base = os.path.join(HOME, server, "base")
    try:
        ids = os.listdir(base)
    except OSError:
        return False
    for backup in ids:
        try:
            with open(os.path.join(base, backup, "backup.info")) as info:
                if any(line.strip() == "status=DONE" for line in info):
                    return True
        except OSError:
            pass
    return False


def main(argv):
    if len(argv) == 3 and argv[1] == "has-backup":
        return 0 if has_backup(argv[2]) else 1
    if len(argv) >= 4 and argv[1] == "nudged" and argv[3] == BARMAN:
        return nudged(argv[2], argv[3:])
    if len(argv) != 4 or argv[1] not in ("check", "follow"):
        sys.stderr.write(__doc__)
        return 2
    _, verb, server, target = argv
    host = dict(
        kv.split("=", 1) for kv in target.split() if "=" in kv
    ).get("host", "the primary")
    try:
        if verb == "check":
            return 0 if slot_active(target) else 1
        return follow(server, target, host)
    except Failed as e:
        sys.stderr.write("%s: %s\n" % (server, e))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
