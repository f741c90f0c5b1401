// The protobuf TokenRequest decoder, on the bytes kubectl v1.32 sent for
// `kubectl create token app -n ns1 --audience api://AzureADTokenExchange --duration 10m --bound-object-kind Pod
//  --bound-object-name app-0 --bound-object-uid abcd-uid` (captured from the wire).

import { describe, expect, it } from 'vitest';
import { ApiError } from '../../src/sandbox/apiserver/errors.js';
import { decodeTokenRequestProtobuf } from '../../src/sandbox/apiserver/protobuf.js';

const KUBECTL_CREATE_TOKEN =
  '6b3873000a280a1861757468656e7469636174696f6e2e6b38732e696f2f7631120c546f6b656e5265717565737412550a100a0012001a0022002a00320038004200123b0a1a6170693a2f2f417a7572654144546f6b656e45786368616e67651a1a0a03506f64120276311a056170702d302208616263642d75696420d8041a040a0012001a002200';

describe('decodeTokenRequestProtobuf', () => {
  it("reads kubectl create token's request as the JSON TokenRequest it stands for", () => {
    expect(decodeTokenRequestProtobuf(Buffer.from(KUBECTL_CREATE_TOKEN, 'hex'))).toEqual({
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      metadata: {},
      spec: {
        audiences: ['api://AzureADTokenExchange'],
        expirationSeconds: 600,
        boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: 'app-0', uid: 'abcd-uid' },
      },
    });
  });

  it('answers 400 for a body without the k8s magic and for a truncated message, never throwing anything else', () => {
    const bad = [Buffer.from('{"spec":{}}'), Buffer.from(KUBECTL_CREATE_TOKEN, 'hex').subarray(0, 40), Buffer.from('6b387300ff', 'hex')];
    for (const body of bad) {
      let caught: unknown;
      try {
        decodeTokenRequestProtobuf(body);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ApiError);
      expect((caught as ApiError).code).toBe(400);
    }
  });
});
