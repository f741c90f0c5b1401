#!/usr/bin/python3
# A pod's program with Debian's Python Azure SDK (apt-get install python3-azure): asks for a token with
# azure.identity's ManagedIdentityCredential, exactly as a Python application on AKS would (no endpoint, no secret),
# and prints one JSON line with the token's identity claims, in the shape examples/pod-token.mjs prints.
#
#   /usr/bin/python3 examples/pod-token.py [--scope S] [--client-id ID | --resource-id ID] [--max-retries N] [--timeout-ms MS]
#
# Exit 0 with {"ok":true,...} when a token came back, 1 with {"ok":false,...} otherwise.
import base64
import json
import os
import sys
import threading

args = dict(zip((a.lstrip('-') for a in sys.argv[1::2]), sys.argv[2::2]))
scope = args.get('scope', 'https://management.azure.com/.default')
timeout_ms = int(args.get('timeout-ms', '60000'))


def emit(value, code):
    sys.stdout.write(json.dumps(value) + '\n')
    sys.stdout.flush()
    os._exit(code)


# get_token has no deadline of its own when the endpoint accepts and never answers.
timer = threading.Timer(timeout_ms / 1000, lambda: emit({'ok': False, 'error': 'Timeout', 'message': f'no answer within {timeout_ms} ms'}, 1))
timer.daemon = True
timer.start()

try:
    from azure.identity import ManagedIdentityCredential

    options = {}
    if 'client-id' in args:
        options['client_id'] = args['client-id']
    if 'resource-id' in args:
        options['identity_config'] = {'msi_res_id': args['resource-id']}
    if 'max-retries' in args:
        options['retry_total'] = int(args['max-retries'])
        options['retry_status'] = int(args['max-retries'])
    token = ManagedIdentityCredential(**options).get_token(scope)
    payload = token.token.split('.')[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))
    emit({'ok': True, 'claims': {k: claims.get(k) for k in ('appid', 'oid', 'aud', 'tid', 'xms_mirid')}, 'expiresOn': token.expires_on * 1000}, 0)
except Exception as error:  # every failure is reported as one line, as the Node program does
    response = getattr(error, 'response', None)
    cause = getattr(error, '__cause__', None)
    status = getattr(response, 'status_code', None) or getattr(cause, 'status_code', None)
    emit({'ok': False, 'error': type(error).__name__, 'message': str(error).split('\n')[0], 'status': status}, 1)
