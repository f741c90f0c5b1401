"""Debian's Python Kubernetes client (python3-kubernetes) against the API emulator.

Usage: conformance.py KUBECONFIG SECTION [JSON]
  SECTION pods    JSON {"namespace", "node"}      a node the sandbox kubelet runs
  SECTION nodes   JSON {"kubeletNodes": [names]}
  SECTION custom  JSON {"group", "version", "plural", "kind", "namespace", "spec", "patch"}
  SECTION expired JSON {"namespace", "resourceVersion"}   a resourceVersion the server has compacted
Each check that fails raises; the exit status is non-zero and stderr says which check and why.
"""

import json
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main():
    kubeconfig, section = sys.argv[1], sys.argv[2]
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    config.load_kube_config(config_file=kubeconfig)
    {"pods": pods, "nodes": nodes, "custom": custom, "expired": expired}[section](args)
    print(json.dumps({"section": section, "ok": True}))


# ------------------------------------------------------------------------------------------ helpers


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def api_error(fn, *args, **kwargs):
    """Calls fn, which must fail with an ApiException; returns (status, Status body as a dict)."""
    try:
        fn(*args, **kwargs)
    except ApiException as err:
        body = json.loads(err.body) if err.body else {}
        return err.status, body
    raise AssertionError("%s succeeded, an error was expected" % fn.__name__)


def expect_status(fn, status, reason, *args, **kwargs):
    got, body = api_error(fn, *args, **kwargs)
    expect(got == status, "%s: HTTP %s, expected %s (%s)" % (fn.__name__, got, status, body))
    expect(body.get("kind") == "Status" and body.get("reason") == reason and body.get("code") == status,
           "%s: body %s, expected a Status with reason %s" % (fn.__name__, body, reason))
    return body


def wait_until(cond, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def watch_events(list_fn, expected, *args, **kwargs):
    """Streams list_fn from kwargs['resource_version'] until `expected` (type, name) pairs were seen, in order."""
    w = watch.Watch()
    seen = []
    for event in w.stream(list_fn, *args, timeout_seconds=10, **kwargs):
        obj = event["object"]
        name = obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name
        seen.append((event["type"], name))
        if seen == expected:
            w.stop()
    expect(seen == expected, "watch from %s saw %s, expected %s" % (kwargs.get("resource_version"), seen, expected))
    return w


def names(items):
    return sorted(i["metadata"]["name"] if isinstance(i, dict) else i.metadata.name for i in items)


def ensure_namespace(name):
    core = client.CoreV1Api()
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as err:
        expect(err.status == 409, "create namespace %s: HTTP %s" % (name, err.status))


# --------------------------------------------------------------------------------------------- pods


def pods(args):
    ns, node = args["namespace"], args["node"]
    core = client.CoreV1Api()
    ensure_namespace(ns)
    start_rv = core.list_namespaced_pod(ns).metadata.resource_version
    expect(start_rv, "a pod list carries metadata.resourceVersion")

    def pod(name, labels):
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1PodSpec(node_name=node, containers=[client.V1Container(name="c", image="busybox")]),
        )

    created, code, _ = core.create_namespaced_pod_with_http_info(ns, pod("py-a", {"app": "py", "tier": "web"}))
    expect(code == 201 and isinstance(created, client.V1Pod) and created.metadata.uid, "create answers 201 with the pod and its uid")
    core.create_namespaced_pod(ns, pod("py-b", {"app": "py", "tier": "db"}))
    body = expect_status(core.create_namespaced_pod, 409, "AlreadyExists", ns, pod("py-a", {}))
    expect(body["details"]["name"] == "py-a" and body["details"]["kind"] == "pods", "409 details %s" % body["details"])

    got = core.read_namespaced_pod("py-a", ns)
    expect(got.metadata.uid == created.metadata.uid and got.spec.node_name == node, "get returns the created pod")
    expect_status(core.read_namespaced_pod, 404, "NotFound", "py-none", ns)

    # The kubelet reports the pods Running with an IP; the client parses the status it writes.
    running = wait_until(
        lambda: [p for p in core.list_namespaced_pod(ns, label_selector="app=py").items if p.status.phase == "Running" and p.status.pod_ip],
        "both pods Running",
    )
    wait_until(lambda: len(core.list_namespaced_pod(ns, field_selector="status.phase=Running", label_selector="app=py").items) == 2, "two Running pods")
    expect(all(p.status.container_statuses[0].ready for p in running), "container statuses parse")

    expect(names(core.list_namespaced_pod(ns, label_selector="tier=web").items) == ["py-a"], "label selector tier=web")
    expect(names(core.list_namespaced_pod(ns, label_selector="tier in (web,db),app").items) == ["py-a", "py-b"], "set-based selector")
    expect(names(core.list_namespaced_pod(ns, label_selector="tier!=web,app=py").items) == ["py-b"], "inequality selector")
    expect(names(core.list_namespaced_pod(ns, field_selector="metadata.name=py-b").items) == ["py-b"], "field selector metadata.name")
    expect(names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=%s,metadata.namespace=%s" % (node, ns)).items) == ["py-a", "py-b"],
           "field selectors spec.nodeName and metadata.namespace")
    ip = core.read_namespaced_pod("py-b", ns).status.pod_ip
    expect(names(core.list_pod_for_all_namespaces(field_selector="status.podIP=%s" % ip).items) == ["py-b"], "field selector status.podIP")
    expect_status(core.list_namespaced_pod, 400, "BadRequest", ns, field_selector="spec.image=x")

    # A dict body is sent as a strategic merge patch; a list as a JSON patch.
    patched = core.patch_namespaced_pod("py-a", ns, {"metadata": {"labels": {"patched": "yes"}}})
    expect(patched.metadata.labels == {"app": "py", "tier": "web", "patched": "yes"}, "strategic merge patch keeps labels")
    patched = core.patch_namespaced_pod("py-a", ns, [{"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}}])
    expect(patched.metadata.annotations == {"a": "1"}, "JSON patch")
    body = expect_status(core.patch_namespaced_pod, 422, "Invalid", "py-a", ns, {"metadata": {"labels": {"bad key!": "v"}}})
    expect(body["details"]["causes"][0]["field"] == "metadata.labels", "invalid label key: %s" % body)
    other = core.read_namespaced_pod("py-a", ns)
    expect_status(core.replace_namespaced_pod, 400, "BadRequest", "py-none", ns, other)
    stale = core.read_namespaced_pod("py-a", ns)
    core.patch_namespaced_pod("py-a", ns, {"metadata": {"labels": {"again": "1"}}})
    stale.metadata.labels["stale"] = "1"
    expect_status(core.replace_namespaced_pod, 409, "Conflict", "py-a", ns, stale)

    core.delete_namespaced_pod("py-b", ns, dry_run="All")
    expect(core.read_namespaced_pod("py-b", ns).metadata.deletion_timestamp is None, "a dry-run delete leaves the pod")
    deleted = core.delete_namespaced_pod("py-b", ns)
    expect(isinstance(deleted, client.V1Pod) and deleted.metadata.name == "py-b", "deleting a pod answers with the pod")
    wait_until(lambda: api_error(core.read_namespaced_pod, "py-b", ns)[0] == 404, "py-b gone")
    expect_status(core.delete_namespaced_pod, 404, "NotFound", "py-b", ns)

    # A watch from the first list's resourceVersion replays everything since, in order (allowWatchBookmarks=True too).
    w = watch.Watch()
    seen = []
    for event in w.stream(core.list_namespaced_pod, ns, resource_version=start_rv, allow_watch_bookmarks=True, timeout_seconds=10):
        if event["type"] == "BOOKMARK":
            continue
        seen.append((event["type"], event["object"].metadata.name))
        if seen[-1] == ("DELETED", "py-b"):
            w.stop()
    # The kubelet's status writes interleave with ours: check each pod's own sequence, and the order of the creations.
    of = lambda n: [t for t, name in seen if name == n]
    expect(of("py-a")[0] == "ADDED" and set(of("py-a")[1:]) == {"MODIFIED"}, "py-a events from %s: %s" % (start_rv, seen))
    expect(of("py-b")[0] == "ADDED" and of("py-b")[-1] == "DELETED" and set(of("py-b")[1:-1]) == {"MODIFIED"}, "py-b events: %s" % seen)
    expect(seen.index(("ADDED", "py-a")) < seen.index(("ADDED", "py-b")), "creations in order: %s" % seen)
    expect(int(w.resource_version) > int(start_rv), "the watch advanced its resourceVersion")

    # A later watch from where the first stopped sees only what came after.
    after = w.resource_version
    core.delete_namespaced_pod("py-a", ns)
    watch_events(core.list_namespaced_pod, [("DELETED", "py-a")], ns, resource_version=after)

    # A collection delete by label removes what matches and answers with the list as it was.
    for name, batch in (("py-c", "yes"), ("py-d", "yes"), ("py-e", "no")):
        core.create_namespaced_pod(ns, pod(name, {"batch": batch}))
    raw = core.delete_collection_namespaced_pod(ns, label_selector="batch=yes", _preload_content=False)
    gone = json.loads(raw.data)
    expect(gone["kind"] == "PodList" and names(gone["items"]) == ["py-c", "py-d"], "collection delete answers the matched pods: %s" % gone.get("kind"))
    wait_until(lambda: names(core.list_namespaced_pod(ns).items) == ["py-e"], "only py-e left")

    # An unscheduled pod is bound by the kubelet (the binding subresource); its spec stays immutable but for images.
    core.create_namespaced_pod(ns, client.V1Pod(metadata=client.V1ObjectMeta(name="py-u"), spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")])))
    bound = wait_until(lambda: core.read_namespaced_pod("py-u", ns).spec.node_name, "py-u bound to a node")
    scheduled = [c for c in core.read_namespaced_pod("py-u", ns).status.conditions if c.type == "PodScheduled"]
    expect(scheduled and scheduled[0].status == "True", "PodScheduled condition after binding")
    body = expect_status(core.patch_namespaced_pod, 422, "Invalid", "py-u", ns, {"spec": {"nodeName": bound + "-other"}})
    expect(body["details"]["causes"][0]["field"] == "spec", "spec.nodeName is immutable: %s" % body)
    image = core.patch_namespaced_pod("py-u", ns, {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}})
    expect(image.spec.containers[0].image == "busybox:2", "a container image may change")


# -------------------------------------------------------------------------------------------- nodes


def nodes(args):
    core = client.CoreV1Api()
    listed = core.list_node()
    kubelet_nodes = [n for n in listed.items if n.metadata.name in args["kubeletNodes"]]
    expect(names(kubelet_nodes) == sorted(args["kubeletNodes"]), "list_node returns the kubelet's nodes: %s" % names(listed.items))
    for n in kubelet_nodes:
        info = n.status.node_info
        for field in ("architecture", "boot_id", "container_runtime_version", "kernel_version", "kube_proxy_version",
                      "kubelet_version", "machine_id", "operating_system", "os_image", "system_uuid"):
            expect(getattr(info, field), "node %s nodeInfo.%s is set" % (n.metadata.name, field))
        expect([c.type for c in n.status.conditions] == ["Ready"] and n.status.conditions[0].status == "True", "node Ready")
        expect({a.type for a in n.status.addresses} >= {"InternalIP", "Hostname"}, "node addresses")
    expect(len({n.status.node_info.machine_id for n in kubelet_nodes}) == len(kubelet_nodes), "machine IDs differ per node")

    start_rv = listed.metadata.resource_version
    body = client.V1Node(metadata=client.V1ObjectMeta(name="py-node", labels={"pool": "py", "zone": "1"}),
                         spec=client.V1NodeSpec(provider_id="azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/py-node"))
    created = core.create_node(body)
    expect(created.metadata.uid and created.metadata.namespace is None, "a node is cluster-scoped")
    expect_status(core.create_node, 409, "AlreadyExists", body)
    expect(core.read_node("py-node").spec.provider_id.endswith("/py-node"), "get node")
    expect_status(core.read_node, 404, "NotFound", "py-none")

    expect(names(core.list_node(label_selector="pool=py").items) == ["py-node"], "label selector on nodes")
    expect(names(core.list_node(label_selector="!pool").items) == sorted(args["kubeletNodes"]), "label-absent selector on nodes")
    expect(names(core.list_node(field_selector="metadata.name=py-node").items) == ["py-node"], "field selector on nodes")

    patched = core.patch_node("py-node", {"metadata": {"labels": {"zone": "2"}}, "spec": {"unschedulable": True}})
    expect(patched.metadata.labels["zone"] == "2" and patched.spec.unschedulable is True, "node patch")
    status = core.patch_node_status("py-node", {"status": {"nodeInfo": {
        "architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "containerd://1.7.0", "kernelVersion": "6.1.0",
        "kubeProxyVersion": "v1.32.0", "kubeletVersion": "v1.32.0", "machineID": "m", "operatingSystem": "linux",
        "osImage": "Debian GNU/Linux 12 (bookworm)", "systemUUID": "u"}}})
    expect(status.status.node_info.kubelet_version == "v1.32.0", "node status patch")
    stale = created
    stale.metadata.labels["stale"] = "1"
    expect_status(core.replace_node, 409, "Conflict", "py-node", stale)

    deleted = core.delete_node("py-node")
    expect(deleted.kind == "Status" and deleted.status == "Success" and deleted.details.name == "py-node"
           and deleted.details.kind == "nodes" and deleted.details.uid == created.metadata.uid,
           "deleting a node answers with a Success Status naming it: %s" % deleted)
    expect_status(core.read_node, 404, "NotFound", "py-node")
    watch_events(core.list_node, [("ADDED", "py-node"), ("MODIFIED", "py-node"), ("MODIFIED", "py-node"), ("DELETED", "py-node")],
                 resource_version=start_rv, field_selector="metadata.name=py-node")


# ------------------------------------------------------------------------------------------- custom


def custom(args):
    group, version, plural, kind, ns = args["group"], args["version"], args["plural"], args["kind"], args["namespace"]
    api = client.CustomObjectsApi()
    ensure_namespace(ns)
    start_rv = api.list_namespaced_custom_object(group, version, ns, plural)["metadata"]["resourceVersion"]

    def obj(name, labels):
        return {"apiVersion": "%s/%s" % (group, version), "kind": kind,
                "metadata": {"name": name, "labels": labels}, "spec": args["spec"]}

    created, code, _ = api.create_namespaced_custom_object_with_http_info(group, version, ns, plural, obj("py-one", {"app": "py", "n": "1"}))
    expect(code == 201, "create answers 201, not %s" % code)
    expect(created["metadata"]["uid"] and created["spec"] == args["spec"], "create returns the object with its spec: %s" % created)
    created_two = api.create_namespaced_custom_object(group, version, ns, plural, obj("py-two", {"app": "py", "n": "2"}))
    body = expect_status(api.create_namespaced_custom_object, 409, "AlreadyExists", group, version, ns, plural, obj("py-one", {}))
    expect(body["details"] == {"name": "py-one", "group": group, "kind": plural}, "409 details %s" % body["details"])

    got = api.get_namespaced_custom_object(group, version, ns, plural, "py-one")
    expect(got["metadata"]["uid"] == created["metadata"]["uid"], "get returns the created object")
    expect_status(api.get_namespaced_custom_object, 404, "NotFound", group, version, ns, plural, "py-none")

    listed = api.list_namespaced_custom_object(group, version, ns, plural, label_selector="app=py")
    expect(listed["kind"] == kind + "List" and names(listed["items"]) == ["py-one", "py-two"], "list by label: %s" % listed.get("kind"))
    expect(names(api.list_namespaced_custom_object(group, version, ns, plural, label_selector="n notin (1)")["items"]) == ["py-two"], "set-based selector")
    expect(names(api.list_namespaced_custom_object(group, version, ns, plural, field_selector="metadata.name=py-one")["items"]) == ["py-one"], "field selector metadata.name")
    first = api.list_namespaced_custom_object(group, version, ns, plural, limit=1)
    expect(len(first["items"]) == 1 and first["metadata"].get("continue") and first["metadata"].get("remainingItemCount") == 1,
           "a page of one with a continue token: %s" % first["metadata"])
    rest = api.list_namespaced_custom_object(group, version, ns, plural, limit=1, _continue=first["metadata"]["continue"])
    expect(names(first["items"] + rest["items"]) == ["py-one", "py-two"] and not rest["metadata"].get("continue"), "the second page ends the list")
    everywhere = api.list_cluster_custom_object(group, version, plural, field_selector="metadata.namespace=%s" % ns)
    expect(names(everywhere["items"]) == ["py-one", "py-two"], "cluster-wide list with metadata.namespace")
    expect_status(api.list_namespaced_custom_object, 400, "BadRequest", group, version, ns, plural, field_selector="spec.x=y")

    patched = api.patch_namespaced_custom_object(group, version, ns, plural, "py-one", {"metadata": {"labels": {"patched": "yes"}}, "spec": args["patch"]})
    expect(patched["metadata"]["labels"] == {"app": "py", "n": "1", "patched": "yes"}, "merge patch on labels")
    for k, v in args["patch"].items():
        expect(patched["spec"][k] == v, "merge patch on spec.%s" % k)
    stale = created
    stale["metadata"]["labels"]["stale"] = "1"
    expect_status(api.replace_namespaced_custom_object, 409, "Conflict", group, version, ns, plural, "py-one", stale)
    fresh = api.get_namespaced_custom_object(group, version, ns, plural, "py-one")
    fresh["metadata"]["labels"]["replaced"] = "1"
    replaced = api.replace_namespaced_custom_object(group, version, ns, plural, "py-one", fresh)
    expect(int(replaced["metadata"]["resourceVersion"]) > int(fresh["metadata"]["resourceVersion"]), "replace bumps resourceVersion")

    deleted = api.delete_namespaced_custom_object(group, version, ns, plural, "py-two")
    expect(deleted.get("kind") == "Status" and deleted.get("status") == "Success"
           and deleted["details"] == {"name": "py-two", "group": group, "kind": plural, "uid": created_two["metadata"]["uid"]},
           "deleting a custom object answers with a Success Status naming it: %s" % deleted)
    expect_status(api.get_namespaced_custom_object, 404, "NotFound", group, version, ns, plural, "py-two")
    expect_status(api.delete_namespaced_custom_object, 404, "NotFound", group, version, ns, plural, "py-two")

    w = watch_events(api.list_namespaced_custom_object,
                     [("ADDED", "py-one"), ("ADDED", "py-two"), ("MODIFIED", "py-one"), ("MODIFIED", "py-one"), ("DELETED", "py-two")],
                     group, version, ns, plural, resource_version=start_rv)
    api.delete_namespaced_custom_object(group, version, ns, plural, "py-one")
    watch_events(api.list_namespaced_custom_object, [("DELETED", "py-one")], group, version, ns, plural, resource_version=w.resource_version)

    # A collection delete answers with the list as it was (22.6's CustomObjectsApi sends no selector).
    for name in ("py-batch-1", "py-batch-2"):
        api.create_namespaced_custom_object(group, version, ns, plural, obj(name, {"batch": "yes"}))
    gone = api.delete_collection_namespaced_custom_object(group, version, ns, plural)
    expect(gone["kind"] == kind + "List" and names(gone["items"]) == ["py-batch-1", "py-batch-2"], "collection delete answers the deleted list: %s" % gone)
    expect(api.list_namespaced_custom_object(group, version, ns, plural)["items"] == [], "collection delete empties the namespace")


# ------------------------------------------------------------------------------------------ expired


def expired(args):
    """A watch from a compacted resourceVersion: the client retries once on the ERROR 410 event, then raises."""
    core = client.CoreV1Api()
    try:
        for event in watch.Watch().stream(core.list_namespaced_pod, args["namespace"], resource_version=args["resourceVersion"]):
            raise AssertionError("watch from a compacted resourceVersion yielded %s" % event["type"])
    except ApiException as err:
        expect(err.status == 410 and "Expired" in str(err.reason), "410 Expired, got %s %s" % (err.status, err.reason))
        return
    raise AssertionError("watch from a compacted resourceVersion ended without an error")


if __name__ == "__main__":
    main()
