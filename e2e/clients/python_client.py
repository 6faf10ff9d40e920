"""The Python `kubernetes` client (37.x) against Agora, as its users drive custom resources.

Run by e2e/tests/python_client.rs with the kubeconfig `agora apiserver` wrote (HTTPS, its CA, its token):
CustomObjectsApi create / get / list / watch / dry run / delete collection, and DynamicClient through discovery.
Any failed assertion exits non-zero with the reason.
"""

import sys

from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

GROUP, VERSION, NS, PLURAL = "agora", "v1", "default", "apps"


def app(name, tier):
    return {
        "apiVersion": "agora/v1",
        "kind": "App",
        "metadata": {"name": name, "labels": {"tier": tier}},
        "spec": {"cmd": "sleep 100", "instances": 1},
    }


def main(kubeconfig):
    api_client = config.new_client_from_config(config_file=kubeconfig)
    custom = client.CustomObjectsApi(api_client)

    created = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, app("py-web", "web"))
    assert created["metadata"]["uid"], created
    assert created["spec"]["mem"] == 128.0, "server defaults are applied"
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, app("py-db", "db"))
    got = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "py-web")
    assert got["metadata"]["resourceVersion"], got

    listed = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, label_selector="tier=web")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["py-web"], listed
    rv = listed["metadata"]["resourceVersion"]

    # A dry run answers with what would be stored and stores nothing.
    dry = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, app("py-dry", "web"), dry_run="All")
    assert dry["metadata"]["name"] == "py-dry" and not dry["metadata"].get("resourceVersion"), dry
    try:
        custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "py-dry")
        raise AssertionError("the dry-run create was stored")
    except ApiException as e:
        assert e.status == 404, e
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "py-web", {"spec": {"instances": 7}}, dry_run="All"
    )
    assert patched["spec"]["instances"] == 7, patched
    again = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "py-web")
    assert again["spec"]["instances"] == 1 and again["metadata"]["resourceVersion"] == got["metadata"]["resourceVersion"]

    # A watch from the list's revision sees a change made after it.
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "py-web", {"spec": {"instances": 2}})
    seen = []
    for event in watch.Watch().stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, resource_version=rv, timeout_seconds=10
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if event["type"] == "MODIFIED":
            break
    assert ("MODIFIED", "py-web") in seen, seen

    # Invalid input is a 422 naming the field.
    bad = app("py-bad", "web")
    bad["spec"]["instances"] = -1
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, bad)
        raise AssertionError("an invalid App was accepted")
    except ApiException as e:
        assert e.status == 422 and "spec.instances" in e.body, e.body

    # DynamicClient finds the kind through discovery.
    dyn = dynamic.DynamicClient(api_client)
    apps = dyn.resources.get(api_version="agora/v1", kind="App")
    names = sorted(o.metadata.name for o in apps.get(namespace=NS).items)
    assert names == ["py-db", "py-web"], names

    # Delete collection, by label (a dry run first, which deletes nothing).
    custom.delete_collection_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, label_selector="tier=web", dry_run="All"
    )
    assert len(custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]) == 2
    deleted = custom.delete_collection_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, label_selector="tier=web")
    assert [o["metadata"]["name"] for o in deleted["items"]] == ["py-web"], deleted
    left = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert [o["metadata"]["name"] for o in left["items"]] == ["py-db"], left
    print("python client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
