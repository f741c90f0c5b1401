// The Endpoints lock's record as client-go writes and reads it (the original MIC's format).
import { ApiException, type V1Endpoints } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { EndpointsLock, endpointsRecordJson, LEADER_ANNOTATION, parseEndpointsRecord, type EndpointsClient } from '../../src/kube/resourcelock.js';

// What client-go 0.23's EndpointsLock leaves in the annotation (json tags, metav1.Time in RFC3339 seconds).
const ORIGINAL = '{"holderIdentity":"mic-5b7c9d-x2x9q","leaseDurationSeconds":15,"acquireTime":"2026-11-30T10:00:00Z","renewTime":"2026-11-30T10:05:03Z","leaderTransitions":3}';

class MemoryEndpoints implements EndpointsClient {
  ep: V1Endpoints | undefined;
  rv = 0;
  async readNamespacedEndpoints(): Promise<V1Endpoints> {
    if (!this.ep) throw new ApiException(404, 'not found', '{"reason":"NotFound"}', {});
    return structuredClone(this.ep);
  }
  async createNamespacedEndpoints(p: { body: V1Endpoints }): Promise<V1Endpoints> {
    if (this.ep) throw new ApiException(409, 'exists', '{"reason":"AlreadyExists"}', {});
    return this.#store(p.body);
  }
  async replaceNamespacedEndpoints(p: { body: V1Endpoints }): Promise<V1Endpoints> {
    if (p.body.metadata?.resourceVersion !== this.ep?.metadata?.resourceVersion) throw new ApiException(409, 'conflict', '{"reason":"Conflict"}', {});
    return this.#store(p.body);
  }
  #store(body: V1Endpoints): V1Endpoints {
    this.ep = { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(++this.rv) } };
    return structuredClone(this.ep);
  }
}

describe('Endpoints leader record', () => {
  it("reads the original MIC's record", () => {
    expect(parseEndpointsRecord(ORIGINAL, 'ep')).toEqual({
      holderIdentity: 'mic-5b7c9d-x2x9q',
      leaseDurationSeconds: 15,
      acquireTime: Date.parse('2026-11-30T10:00:00Z'),
      renewTime: Date.parse('2026-11-30T10:05:03Z'),
      leaderTransitions: 3,
    });
  });

  it('writes the same shape: the same keys in the same order, whole-second UTC times, null when unset', () => {
    const r = parseEndpointsRecord(ORIGINAL, 'ep');
    expect(endpointsRecordJson(r)).toBe(ORIGINAL);
    expect(endpointsRecordJson({ ...r, renewTime: Date.parse('2026-11-30T10:05:03.987Z') })).toContain('"renewTime":"2026-11-30T10:05:03Z"');
    expect(JSON.parse(endpointsRecordJson({ ...r, acquireTime: undefined })).acquireTime).toBeNull();
    expect(parseEndpointsRecord('{"holderIdentity":"","acquireTime":null,"renewTime":null}', 'ep')).toMatchObject({ holderIdentity: '', acquireTime: undefined, renewTime: undefined, leaseDurationSeconds: 0 });
  });

  it('refuses what client-go would not decode, naming the object', () => {
    expect(() => parseEndpointsRecord('{"holderIdentity":', 'Endpoints default/x')).toThrow(/Endpoints default\/x: annotation .* is not JSON/);
    expect(() => parseEndpointsRecord('[]', 'ep')).toThrow(/not a JSON object/);
    expect(() => parseEndpointsRecord('{"leaseDurationSeconds":"15"}', 'ep')).toThrow(/leaseDurationSeconds is not an integer/);
    expect(() => parseEndpointsRecord('{"holderIdentity":7}', 'ep')).toThrow(/holderIdentity is not a string/);
    expect(() => parseEndpointsRecord('{"renewTime":"yesterday"}', 'ep')).toThrow(/renewTime is not an RFC3339 time/);
  });

  it('keeps other annotations and writes optimistically on the resourceVersion it read', async () => {
    const client = new MemoryEndpoints();
    const lock = new EndpointsLock(client, 'default', 'aad-pod-identity-mic');
    expect(await lock.get()).toBeNull();
    client.ep = { metadata: { name: 'aad-pod-identity-mic', namespace: 'default', resourceVersion: '7', annotations: { other: 'kept' } } };
    client.rv = 7;
    const empty = await lock.get();
    expect(empty?.record.holderIdentity).toBe('');
    const record = { ...parseEndpointsRecord(ORIGINAL, 'ep'), holderIdentity: 'ours' };
    await lock.update(record);
    expect(client.ep.metadata?.annotations).toEqual({ other: 'kept', [LEADER_ANNOTATION]: endpointsRecordJson(record) });
    // Someone writes in between: the next update from a stale read is refused.
    await lock.get();
    client.ep = { ...client.ep, metadata: { ...client.ep.metadata, resourceVersion: String(++client.rv) } };
    await expect(lock.update(record)).rejects.toMatchObject({ code: 409 });
  });
});
