"""Debian's Python Kubernetes client asks the API emulator for service-account tokens (TokenRequest).

Usage: tokenrequest.py KUBECONFIG JSON {"namespace", "serviceAccount", "pod", "podUid", "audience"}
Prints one JSON line: {"token", "expirationTimestamp", "audiences", "shortStatus", "shortMessage",
"wrongUidStatus", "wrongUidMessage"}. A call that does not behave raises (non-zero exit, stderr says why).
"""

import json
import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException


def request(audience, seconds, pod, uid):
    return client.AuthenticationV1TokenRequest(
        api_version="authentication.k8s.io/v1",
        kind="TokenRequest",
        spec=client.V1TokenRequestSpec(
            audiences=[audience],
            expiration_seconds=seconds,
            bound_object_ref=client.V1BoundObjectReference(api_version="v1", kind="Pod", name=pod, uid=uid),
        ),
    )


def refused(core, args, seconds, uid):
    try:
        core.create_namespaced_service_account_token(args["serviceAccount"], args["namespace"], request(args["audience"], seconds, args["pod"], uid))
    except ApiException as err:
        return err.status, json.loads(err.body)["message"]
    raise AssertionError(f"token request with expirationSeconds={seconds} uid={uid} was granted")


def main():
    kubeconfig = sys.argv[1]
    args = json.loads(sys.argv[2])
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    out = core.create_namespaced_service_account_token(
        args["serviceAccount"], args["namespace"], request(args["audience"], 600, args["pod"], args["podUid"])
    )
    short_status, short_message = refused(core, args, 599, args["podUid"])
    wrong_status, wrong_message = refused(core, args, 600, "00000000-0000-0000-0000-000000000000")
    print(json.dumps({
        "token": out.status.token,
        "expirationTimestamp": out.status.expiration_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "audiences": out.spec.audiences,
        "shortStatus": short_status,
        "shortMessage": short_message,
        "wrongUidStatus": wrong_status,
        "wrongUidMessage": wrong_message,
    }))


if __name__ == "__main__":
    main()
