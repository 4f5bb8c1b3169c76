#!/usr/bin/python3
# Managed by tpa: the deploy's helper beside Patroni (planner/patroni.rs).
#
#   patroni-tpa postgres-up CLUSTER         exit 0 when Postgres runs under postgres.service or
#                                           Patroni runs (then once Postgres accepts connections,
#                                           waiting up to 60 s)
#   patroni-tpa owned CLUSTER               exit 0 when patroni@CLUSTER runs and postgres.service
#                                           is disabled
#   patroni-tpa takeover CLUSTER ROLE       stop and disable postgres.service, start Patroni, wait
#                                           until this member is ROLE (leader or replica)
#   patroni-tpa synced CLUSTER              exit 0 when the DCS holds /etc/patroni/CLUSTER.dcs.json,
#                                           no Postgres parameter it does not set, and no member
#                                           waits for a restart
#   patroni-tpa sync CLUSTER                PATCH /config with it (parameters it lacks set to null:
#                                           removed), then restart the members that report
#                                           pending_restart, one at a time (leader last)
#   patroni-tpa state CLUSTER               print this member's Patroni state as JSON (state,
#                                           role, timeline, lag, leader); exit 1 when the REST
#                                           API does not answer
#   patroni-tpa loaded CLUSTER              exit 0 when Postgres does not run, or has loaded every
#                                           file of ours it reads on reload (pg_hba.conf,
#                                           pg_ident.conf, postgresql.conf, conf.d, its certificate)
#   patroni-tpa reload CLUSTER              make Postgres reload them (pg_reload_conf(): Patroni
#                                           does not watch files it does not manage)
#   patroni-tpa switchover CLUSTER LEADER CANDIDATE
#                                           POST /switchover to the leader's REST API (refused
#                                           unless LEADER is Patroni's leader)
#
# The REST API is reached over TLS verified against the cluster CA; writes authenticate with
# the user and password of the restapi section of /etc/patroni/CLUSTER.yml (never printed).
import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request


def load(cluster):
    with open(f"/etc/patroni/{cluster}.yml") as f:
        return json.load(f)


def parsed(text):
    return json.loads(text) if text.strip().startswith(("{", "[")) else text


def api(conf, method, url, body=None, auth=False, timeout=30):
    ctx = ssl.create_default_context(cafile=conf["restapi"]["cafile"])
    headers = {"Content-Type": "application/json"}
    if auth:
        a = conf["restapi"]["authentication"]
        token = base64.b64encode(f"{a['username']}:{a['password']}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
            return r.status, parsed(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, parsed(e.read().decode())


def local_url(conf, path):
    return f"https://{conf['restapi']['connect_address']}{path}"


def active(unit):
    return subprocess.run(["systemctl", "is-active", "--quiet", unit]).returncode == 0


def enabled(unit):
    return subprocess.run(["systemctl", "is-enabled", "--quiet", unit]).returncode == 0


def systemctl(*args):
    subprocess.run(["systemctl", *args], check=True)


def wait_role(conf, role, seconds=240):
    path = "/primary" if role == "leader" else "/replica"
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            status, body = api(conf, "GET", local_url(conf, path))
            if status == 200:
                return
            last = f"GET {path}: {status}"
        except (OSError, ValueError) as e:
            last = str(e)
        time.sleep(1)
    unit = f"patroni@{conf['scope']}"
    journal = subprocess.run(["journalctl", "-u", unit, "-n", "15", "--no-pager", "-o", "cat"],
                             capture_output=True, text=True).stdout
    sys.exit(f"Patroni did not report this member as {role} within {seconds} s ({last}); "
             f"journalctl -u {unit} ends with:\n{journal}")


def subset(want, have):
    if isinstance(want, dict):
        return isinstance(have, dict) and all(subset(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(
            subset(a, b) for a, b in zip(want, have))
    return str(want).lower() == str(have).lower()


def cluster_state(conf):
    status, body = api(conf, "GET", local_url(conf, "/cluster"))
    if status != 200:
        sys.exit(f"GET /cluster: {status}")
    return body


def parameters(config):
    return ((config or {}).get("postgresql") or {}).get("parameters") or {}


def stale(want, have):
    """The Postgres parameters the DCS holds that config.yml no longer sets: deploy owns
    postgresql.parameters, so a setting removed from config.yml is removed from the DCS."""
    return sorted(k for k in parameters(have) if k not in parameters(want))


def synced(conf, cluster):
    with open(f"/etc/patroni/{cluster}.dcs.json") as f:
        want = json.load(f)
    status, have = api(conf, "GET", local_url(conf, "/config"))
    if status != 200 or not subset(want, have) or stale(want, have):
        return False
    return not any(m.get("pending_restart") for m in cluster_state(conf).get("members", []))


def sync(conf, cluster):
    with open(f"/etc/patroni/{cluster}.dcs.json") as f:
        want = json.load(f)
    # Just after the takeover, the DCS may not hold the configuration yet (502): wait for it.
    deadline = time.time() + 60
    status, have = api(conf, "GET", local_url(conf, "/config"))
    while status != 200 and time.time() < deadline:
        time.sleep(2)
        status, have = api(conf, "GET", local_url(conf, "/config"))
    if status != 200:
        sys.exit(f"GET /config: {status} (after 60 s)")
    removed = stale(want, have)
    if not subset(want, have) or removed:
        patch = json.loads(json.dumps(want))
        # PATCH merges; a null removes the key (Patroni's documented reset).
        for key in removed:
            patch.setdefault("postgresql", {}).setdefault("parameters", {})[key] = None
        status, body = api(conf, "PATCH", local_url(conf, "/config"), patch, auth=True)
        if status != 200:
            sys.exit(f"PATCH /config: {status} {body}")
        # Members apply it (and notice what needs a restart) on their next loop.
        time.sleep(int(want.get("loop_wait", 10)) + 3)
    members = cluster_state(conf).get("members", [])
    pending = [m for m in members if m.get("pending_restart")]
    pending.sort(key=lambda m: m.get("role") == "leader")
    for m in pending:
        status, body = api(conf, "POST", m["api_url"].rsplit("/", 1)[0] + "/restart",
                           {"restart_pending": True}, auth=True)
        if status not in (200, 202):
            sys.exit(f"restart of {m['name']} through Patroni: {status} {body}")
        deadline = time.time() + 180
        while time.time() < deadline:
            now = {x["name"]: x for x in cluster_state(conf).get("members", [])}
            x = now.get(m["name"], {})
            if x.get("state") in ("running", "streaming") and not x.get("pending_restart"):
                break
            time.sleep(1)
        else:
            sys.exit(f"{m['name']} did not come back within 180 s of its restart")
        print(f"restarted {m['name']} through Patroni")


def psql(conf, sql):
    port = conf["postgresql"]["connect_address"].rsplit(":", 1)[1]
    r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-h",
                        "/var/run/postgresql", "-p", port, "-d", "postgres", "-c", sql],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def wait_accepting(conf, seconds):
    deadline = time.monotonic() + seconds
    while psql(conf, "select 1") != "1" and time.monotonic() < deadline:
        time.sleep(0.5)


def reload_files(conf, cert):
    data = conf["postgresql"]["data_dir"]
    files = [f"{data}/pg_hba.conf", f"{data}/pg_ident.conf", f"{data}/postgresql.conf", cert]
    confd = f"{data}/conf.d"
    if os.path.isdir(confd):
        files += [os.path.join(confd, f) for f in sorted(os.listdir(confd))]
    return [f for f in files if f and os.path.isfile(f)]


def loaded(conf):
    row = psql(conf, "select extract(epoch from pg_conf_load_time()), "
                     "current_setting('ssl_cert_file')")
    if row is None:
        return True  # Postgres does not run: nothing to reload
    load_time, cert = row.split("|", 1)
    cert = cert if cert.startswith("/") else os.path.join(conf["postgresql"]["data_dir"], cert)
    stale = [f for f in reload_files(conf, cert) if os.path.getmtime(f) > float(load_time)]
    return not stale


def reload(conf):
    if psql(conf, "select pg_reload_conf()") != "t":
        sys.exit("pg_reload_conf() failed: is Postgres running?")
    print("Postgres reloaded its configuration files")


def leader_of(members):
    return next((m for m in members if m.get("role") in ("leader", "standby_leader")), None)


def state(conf):
    # GET /patroni answers 503 (with the same body) when Postgres is not running.
    _, me = api(conf, "GET", local_url(conf, "/patroni"), timeout=10)
    if not isinstance(me, dict):
        sys.exit(f"GET /patroni: {me}")
    members = cluster_state(conf).get("members", [])
    mine = next((m for m in members if m.get("name") == conf["name"]), {})
    leader = leader_of(members)
    print(json.dumps({
        "state": me.get("state"),
        "role": mine.get("role") or me.get("role"),
        "timeline": me.get("timeline"),
        "lag": mine.get("lag") if isinstance(mine.get("lag"), int) else None,
        "leader": leader and leader.get("name"),
        "pending_restart": bool(me.get("pending_restart")),
    }))


def switchover(conf, leader, candidate):
    members = cluster_state(conf).get("members", [])
    current = leader_of(members)
    if current is None:
        sys.exit("Patroni reports no leader")
    if current["name"] != leader:
        sys.exit(f"Patroni's leader is {current['name']}, not {leader}")
    if not any(m.get("name") == candidate for m in members):
        sys.exit(f"{candidate} is not a member of Patroni cluster {conf['scope']}")
    url = current["api_url"].rsplit("/", 1)[0] + "/switchover"
    status, body = api(conf, "POST", url, {"leader": leader, "candidate": candidate},
                       auth=True, timeout=90)
    # 503 "Switchover status unknown": Patroni stopped polling; the caller checks the result.
    if status != 200 and not (status == 503 and "unknown" in str(body).lower()):
        sys.exit(f"POST /switchover: {status} {body}")
    print(str(body).strip())


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__ or "usage: patroni-tpa COMMAND CLUSTER [ROLE]")
    command, cluster = sys.argv[1], sys.argv[2]
    unit = f"patroni@{cluster}.service"
    if command == "postgres-up":
        if active("postgres.service"):
            sys.exit(0)
        if not active(unit):
            sys.exit(1)
        # Patroni runs Postgres, and may still be starting it (after a reboot, or rejoining):
        # wait until it accepts connections, so that the stage's SQL after this can use it.
        wait_accepting(load(cluster), 60)
        sys.exit(0)
    if command == "owned":
        sys.exit(0 if active(unit) and not enabled("postgres.service") else 1)
    conf = load(cluster)
    if command == "takeover":
        role = sys.argv[3]
        if not active(unit):
            systemctl("stop", "postgres.service")
        systemctl("disable", "--quiet", "postgres.service")
        systemctl("enable", "--quiet", unit)
        systemctl("start", unit)
        wait_role(conf, role)
    elif command == "synced":
        sys.exit(0 if synced(conf, cluster) else 1)
    elif command == "sync":
        sync(conf, cluster)
    elif command == "loaded":
        sys.exit(0 if loaded(conf) else 1)
    elif command == "reload":
        reload(conf)
    elif command == "state":
        try:
            state(conf)
        except (OSError, ValueError) as e:
            sys.exit(f"Patroni's REST API does not answer: {e}")
    elif command == "switchover" and len(sys.argv) == 5:
        switchover(conf, sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
