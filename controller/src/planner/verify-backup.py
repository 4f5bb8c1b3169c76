#!/usr/bin/python3
# Managed by tpa: changes made here are overwritten by the next deploy.
"""tpa's restore drill, run as the barman user on the Barman host by `tpa-controller
verify-backup` and by the verify_backup_schedule timer.

    verify-backup SERVER BIN_DIR BACKUP_ID|latest SQL_FILE|- DATABASE
    verify-backup --health SERVER...

Restores the backup with `barman recover` (local, WAL copied, no get-wal) into a scratch
directory under the barman home, starts it with pg_ctl on a unix socket in that directory only
(listen_addresses = '', no TLS, no archiving, nothing of the restored configuration kept but
Barman's own `cp barman_wal` restore_command), waits for the end of recovery, checks that every
database accepts connections, counts the rows of a sample of tables (and runs SQL_FILE in
DATABASE when given), stops and removes the scratch directory, and writes the result as JSON to
stdout and to /var/lib/barman/tpa-verify/SERVER/last.json. Exit status 1 when a check fails.
Every value arrives as an argument; the drill connects to nothing but its own socket.

With --health it only reads, for `tpa-controller status`: per server, the newest backup and its
age, `barman check` (which also reports receive-wal and the backup maximum age) and the last
drill's result, as one JSON array on stdout.
"""

import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HOME = "/var/lib/barman"
BARMAN = "/usr/bin/barman"
# Names the socket file only: with listen_addresses empty there is no TCP port to collide.
PORT = "54329"
SAMPLE_TABLES = 5
SUPERUSER = "postgres"
KEEP = {
    "restore_command": "'cp barman_wal/%f %p'",
    "recovery_end_command": "'rm -fr barman_wal'",
}


class Failed(Exception):
    pass


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def run(argv, timeout, env=None):
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=HOME
        )
    except subprocess.TimeoutExpired:
        return 124, "", "timed out after %ss" % timeout
    return p.returncode, p.stdout, p.stderr


def last_lines(text, n=5):
    return " / ".join(l.strip() for l in text.strip().splitlines()[-n:] if l.strip())


class Drill:
    def __init__(self, server, bin_dir, backup, sql_file, database):
        self.server, self.bin_dir, self.backup = server, bin_dir, backup
        self.sql_file, self.database = sql_file, database
        self.base = os.path.join(HOME, "tpa-verify", server)
        self.scratch = os.path.join(self.base, "scratch")
        self.data = os.path.join(self.scratch, "data")
        self.log = os.path.join(self.scratch, "postgres.log")
        self.started = False
        self.complete = False
        self.result = {
            "server": server,
            "started_at": now().isoformat(timespec="seconds"),
            "backup_id": None,
            "backup_end_time": None,
            "backup_age_seconds": None,
            "restore_seconds": None,
            "drill_seconds": None,
            "recovery_lsn": None,
            "recovery_time": None,
            "checks": [],
            "passed": False,
        }

    def check(self, name, ok, detail):
        self.result["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
        if not ok:
            raise Failed(detail)

    def psql(self, database, sql, timeout=300):
        env = {
            "PATH": "/usr/bin:/bin",
            # No passfile: barman's own holds the real cluster's passwords.
            "PGPASSFILE": os.path.join(self.scratch, "no-passfile"),
            "PGCONNECT_TIMEOUT": "10",
        }
        return run(
            [
                os.path.join(self.bin_dir, "psql"),
                "--no-psqlrc", "--no-align", "--tuples-only", "--quiet",
                "--set", "ON_ERROR_STOP=1",
                "--host", self.scratch, "--port", PORT,
                "--username", SUPERUSER, "--dbname", database,
                "--command", sql,
            ],
            timeout,
            env,
        )

    def pg_ctl(self, *args, timeout=900):
        return run([os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data] + list(args), timeout)

    def cleanup(self):
        # A drill killed earlier (SIGKILL) may have left its server running: stop it first.
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self.pg_ctl("stop", "-m", "immediate", "-w", "-t", "60", timeout=90)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def run(self):
        t0 = time.monotonic()
        self.show()
        os.makedirs(self.scratch, mode=0o700)
        code, out, err = run(
            [BARMAN, "recover", "--no-get-wal", self.server, self.result["backup_id"], self.data],
            4 * 3600,
        )
        self.check("recover", code == 0,
                   "barman recover: ok" if code == 0
                   else "barman recover failed (exit %d): %s" % (code, last_lines(out + err)))
        self.sanitize()
        code, out, err = self.pg_ctl("start", "-w", "-t", "900", "-s", "-l", self.log)
        self.started = True
        self.check("start", code == 0,
                   "postgres started on a private socket" if code == 0
                   else "postgres did not start (exit %d): %s" % (code, self.log_tail()))
        self.wait_for_promotion()
        self.result["restore_seconds"] = round(time.monotonic() - t0, 1)
        self.recovery_point()
        self.databases()
        code, out, err = self.pg_ctl("stop", "-m", "fast", "-w", "-t", "120", timeout=180)
        self.started = False
        self.check("stop", code == 0,
                   "stopped cleanly" if code == 0
                   else "pg_ctl stop failed: %s" % last_lines(out + err))
        self.complete = True

    def show(self):
        code, out, err = run([BARMAN, "-f", "json", "show-backup", self.server, self.backup], 120)
        info = None
        if code == 0:
            try:
                info = json.loads(out).get(self.server)
            except ValueError:
                info = None
        if not info or not info.get("backup_id"):
            self.check("backup", False, "no backup %s of %s: %s"
                       % (self.backup, self.server, last_lines(out + err) or "none"))
        self.result["backup_id"] = info["backup_id"]
        base = info.get("base_backup_information") or {}
        end = base.get("end_time")
        self.result["backup_end_time"] = end
        if end:
            try:
                ended = datetime.datetime.fromisoformat(end)
                self.result["backup_age_seconds"] = int((now() - ended).total_seconds())
            except ValueError:
                pass
        status = info.get("status")
        self.check("backup", status == "DONE",
                   "backup %s is %s" % (info["backup_id"], status))

    def sanitize(self):
        """Nothing of the restored configuration that could reach another host survives."""
        for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
            path = os.path.join(self.data, name)
            if os.path.exists(path):
                os.replace(path, path + ".restored")
        for signal_file in ("standby.signal",):
            path = os.path.join(self.data, signal_file)
            if os.path.exists(path):
                os.remove(path)
        auto = os.path.join(self.data, "postgresql.auto.conf")
        kept = []
        if os.path.exists(auto):
            with open(auto) as f:
                for line in f:
                    m = re.match(r"\s*(\w+)\s*=\s*(.*?)\s*$", line)
                    if not m or m.group(1) not in KEEP:
                        continue
                    if m.group(2) != KEEP[m.group(1)]:
                        self.check("configuration", False,
                                   "barman wrote %s = %s, not the local copy the drill expects"
                                   % (m.group(1), m.group(2)))
                    kept.append(line.strip())
            os.replace(auto, auto + ".restored")
        with open(auto, "w") as f:
            f.write("# tpa restore drill: Barman's local WAL copy only\n")
            f.write("".join(l + "\n" for l in kept))
        hba = os.path.join(self.scratch, "pg_hba.conf")
        with open(hba, "w") as f:
            # The socket directory is the barman user's, mode 0700: only it can connect.
            f.write("local all all trust\n")
        ident = os.path.join(self.scratch, "pg_ident.conf")
        open(ident, "w").close()
        with open(os.path.join(self.data, "postgresql.conf"), "w") as f:
            f.write(
                "# tpa restore drill: a private, throw-away server\n"
                "listen_addresses = ''\n"
                "port = %s\n"
                "unix_socket_directories = '%s'\n"
                "hba_file = '%s'\n"
                "ident_file = '%s'\n"
                "ssl = off\n"
                "archive_mode = off\n"
                "hot_standby = off\n"
                "shared_preload_libraries = ''\n"
                "shared_buffers = 32MB\n"
                "logging_collector = off\n"
                "cluster_name = 'tpa-drill-%s'\n"
                % (PORT, self.scratch, hba, ident, self.server)
            )
        self.check("configuration", True,
                   "private socket %s, no TCP, no archiving, restore_command %s"
                   % (self.scratch, "kept from barman" if kept else "none (WAL in pg_wal)"))

    def log_tail(self):
        try:
            with open(self.log) as f:
                return last_lines(f.read())
        except OSError:
            return "no log"

    def wait_for_promotion(self):
        deadline = time.monotonic() + 600
        while True:
            code, out, err = self.psql("postgres", "select pg_is_in_recovery()", 30)
            if code == 0 and out.strip() == "f":
                self.check("recovery", True, "recovery finished, consistent and open")
                return
            if time.monotonic() > deadline:
                self.check("recovery", False, "still in recovery after 600 s: %s"
                           % (last_lines(err) or self.log_tail()))
            time.sleep(0.5)

    def recovery_point(self):
        try:
            with open(self.log) as f:
                log = f.read()
        except OSError:
            log = ""
        m = re.findall(r"redo done at ([0-9A-F]+/[0-9A-F]+)", log)
        if m:
            self.result["recovery_lsn"] = m[-1]
        m = re.findall(r"last completed transaction was at log time (.+)", log)
        if m:
            self.result["recovery_time"] = m[-1].strip()

    def databases(self):
        code, out, err = self.psql(
            "postgres", "select datname from pg_database where datallowconn order by 1")
        self.check("databases", code == 0 and out.strip(),
                   "databases: %s" % ", ".join(out.split()) if code == 0
                   else "cannot list databases: %s" % last_lines(err))
        failures = []
        for db in out.split():
            code, _, err = self.psql(db, "select 1")
            self.soft("connect %s" % db, code == 0,
                      "accepts connections" if code == 0 else last_lines(err), failures)
            if code != 0:
                continue
            code, tables, err = self.psql(db, (
                "select quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
                "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where c.relkind in ('r', 'm') and n.nspname not in "
                "('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%%' "
                "order by c.relpages desc, 1 limit %d" % SAMPLE_TABLES))
            if code != 0:
                self.soft("tables %s" % db, False, last_lines(err), failures)
                continue
            for table in tables.split():
                code, count, err = self.psql(db, "select count(*) from %s" % table)
                self.soft("rows %s %s" % (db, table), code == 0,
                          "%s rows" % count.strip() if code == 0 else last_lines(err),
                          failures)
        if self.sql_file:
            with open(self.sql_file) as f:
                sql = f.read()
            code, out, err = self.psql(self.database, sql)
            values = [l.split("|")[0] for l in out.splitlines() if l.strip()]
            ok = code == 0 and values and all(v == "t" for v in values)
            self.soft("verify_backup_sql", ok,
                      ("returned true" if ok else "returned %s" % (", ".join(values) or "no row"))
                      if code == 0 else last_lines(err), failures)
        if failures:
            raise Failed("; ".join(failures))

    def soft(self, name, ok, detail, failures):
        """A check that does not stop the drill: the next databases are still checked."""
        self.result["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
        if not ok:
            failures.append("%s: %s" % (name, detail))


def health(server):
    h = {"server": server, "last_backup_id": None, "last_backup_end_time": None,
         "last_backup_age_seconds": None, "receive_wal": None, "check_ok": False,
         "check_failures": [], "last_drill": None}
    code, out, err = run([BARMAN, "-f", "json", "show-backup", server, "latest"], 20)
    try:
        info = json.loads(out).get(server) if code == 0 else None
    except ValueError:
        info = None
    if info and info.get("backup_id"):
        h["last_backup_id"] = info["backup_id"]
        end = (info.get("base_backup_information") or {}).get("end_time")
        h["last_backup_end_time"] = end
        try:
            h["last_backup_age_seconds"] = int(
                (now() - datetime.datetime.fromisoformat(end)).total_seconds())
        except (TypeError, ValueError):
            pass
    code, out, err = run([BARMAN, "check", server], 25)
    lines = re.findall(r"^\s+(.+?): (OK|FAILED)(.*)$", out, re.M)
    for name, state, rest in lines:
        if name == "receive-wal running":
            h["receive_wal"] = "running" if state == "OK" else "not running"
        if state == "FAILED":
            h["check_failures"].append("%s%s" % (name, rest))
    h["check_ok"] = code == 0 and bool(lines) and not h["check_failures"]
    if not h["check_ok"] and not h["check_failures"]:
        h["check_failures"].append("barman check (exit %d): %s" % (code, last_lines(out + err)))
    try:
        with open(os.path.join(HOME, "tpa-verify", server, "last.json")) as f:
            h["last_drill"] = json.load(f)
    except (OSError, ValueError):
        pass
    return h


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--health":
        servers = sys.argv[2:]
        if not all(re.fullmatch(r"[A-Za-z0-9_-]+", s) for s in servers):
            sys.exit("verify-backup: bad server name")
        print(json.dumps([health(s) for s in servers]))
        return
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    server, bin_dir, backup, sql_file, database = sys.argv[1:]
    if not re.fullmatch(r"[A-Za-z0-9_-]+", server):
        sys.exit("verify-backup: bad server name %r" % server)
    if not re.fullmatch(r"latest|[0-9]{8}T[0-9]{6}", backup):
        sys.exit("verify-backup: bad backup id %r (latest or YYYYMMDDTHHMMSS)" % backup)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", database):
        sys.exit("verify-backup: bad database name %r" % database)
    drill = Drill(server, bin_dir, backup, None if sql_file == "-" else sql_file, database)
    os.makedirs(drill.base, mode=0o700, exist_ok=True)
    lock = open(os.path.join(drill.base, "lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit("verify-backup: another drill of %s is running" % server)
    # SIGTERM (a timer stopped, an agent timeout) still cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    drill.cleanup()
    try:
        drill.run()
    except Failed:
        pass
    except Exception as e:  # a bug or an OS error is a failed drill, reported like the rest
        drill.result["checks"].append({"name": "drill", "ok": False, "detail": repr(e)})
    finally:
        if drill.started:
            drill.pg_ctl("stop", "-m", "immediate", "-w", "-t", "60", timeout=90)
        drill.cleanup()
        checks = drill.result["checks"]
        drill.result["passed"] = drill.complete and all(c["ok"] for c in checks)
        drill.result["drill_seconds"] = round(time.monotonic() - t0, 1)
        text = json.dumps(drill.result, indent=1)
        tmp = os.path.join(drill.base, "last.json.tmp")
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(drill.base, "last.json"))
        print(text)
    sys.exit(0 if drill.result["passed"] else 1)


if __name__ == "__main__":
    main()
