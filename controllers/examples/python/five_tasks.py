#!/usr/bin/env python3
"""The seeds' Mesos test framework in plain Python and HTTP (no Agora library): runs five tasks, waits until they
finish, reports and unregisters. Usage: five_tasks.py --server URL [--token-file F --ca-file F] [--name N]"""
import argparse, json, ssl, sys, time, urllib.error, urllib.request
from datetime import datetime, timezone

p = argparse.ArgumentParser()
p.add_argument("--server", required=True)
p.add_argument("--token-file")
p.add_argument("--ca-file")
p.add_argument("--name", default="five-tasks-py")
p.add_argument("--namespace", default="default")
args = p.parse_args()
API, NAME, NS = args.server.rstrip("/") + "/apis/agora/v1", args.name, args.namespace
TOKEN = open(args.token_file).read().strip() if args.token_file else None
TLS = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
NAMES = [f"{NAME}-{i}" for i in range(5)]
CPUS, MEM = 0.1, 32


def call(method, path, body=None, kind="application/json"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method, headers={"Content-Type": kind})
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(req, context=TLS, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def renew_lease():
    # Connected while this lease is renewed: the allocator offers only to connected frameworks.
    spec = {"holderIdentity": NAME, "leaseDurationSeconds": 15, "renewTime": now()}
    code, _ = call("PATCH", f"/namespaces/agora-frameworks/leases/{NAME}", {"spec": spec}, "application/merge-patch+json")
    if code == 404:
        lease = {"apiVersion": "agora/v1", "kind": "Lease", "metadata": {"name": NAME}, "spec": spec}
        call("POST", "/namespaces/agora-frameworks/leases", lease)


def main():
    framework = {"apiVersion": "agora/v1", "kind": "Framework", "metadata": {"name": NAME},
                 "spec": {"roles": ["*"], "failoverTimeoutSeconds": 60}}
    code, out = call("PATCH", f"/frameworks/{NAME}?fieldManager=five-tasks-py&force=true", framework,
                     "application/apply-patch+yaml")
    if code >= 300:
        sys.exit(f"registering: {code} {out.get('message')}")
    renewed, suppressed = 0.0, False
    while True:
        if time.time() - renewed > 5:
            renew_lease()
            renewed = time.time()
        _, tasks = call("GET", f"/namespaces/{NS}/tasks?fieldSelector=spec.framework={NAME}")
        states = {t["metadata"]["name"]: t.get("status", {}).get("state", "Staging") for t in tasks["items"]}
        missing = [n for n in NAMES if n not in states]
        if not missing and all(s in ("Finished", "Failed", "Killed", "Error", "Dropped", "Gone", "Lost")
                               for s in states.values()):
            break
        if not missing and not suppressed:  # SUPPRESS: no more offers wanted
            call("PATCH", f"/frameworks/{NAME}", {"spec": {"suppressed": True}}, "application/merge-patch+json")
            suppressed = True
        _, offers = call("GET", f"/offers?fieldSelector=spec.framework={NAME}")
        for offer in offers["items"]:
            if offer.get("status", {}).get("phase", "Outstanding") != "Outstanding":
                continue
            res, launch = offer["spec"]["resources"], []
            while missing and res["cpus"] >= CPUS * (len(launch) + 1) and res["mem"] >= MEM * (len(launch) + 1):
                name = missing.pop(0)
                launch.append({"metadata": {"name": name, "namespace": NS},
                               "spec": {"cmd": "echo hello from $TASK_ID; sleep 1", "cpus": CPUS, "mem": MEM}})
            # Accept with tasks, or decline (no tasks) with a filter on this agent for 5 s.
            body = {"tasks": launch} if launch else {"refuseSeconds": 5}
            code, out = call("POST", f"/offers/{offer['metadata']['name']}/accept", body)
            if code >= 300:
                print(f"offer {offer['metadata']['name']}: {code} {out.get('message')}", file=sys.stderr)
        time.sleep(0.5)
    finished = 0
    for name in NAMES:
        _, task = call("GET", f"/namespaces/{NS}/tasks/{name}")
        status = task.get("status", {})
        print(f"{name}: {status.get('state')} on {task['spec']['agent']} (exit {status.get('exitCode')})")
        finished += status.get("state") == "Finished"
        call("DELETE", f"/namespaces/{NS}/tasks/{name}")
    call("DELETE", f"/frameworks/{NAME}")  # unregister
    call("DELETE", f"/namespaces/agora-frameworks/leases/{NAME}")
    print(f"{finished}/5 tasks finished")
    sys.exit(0 if finished == 5 else 1)


main()
