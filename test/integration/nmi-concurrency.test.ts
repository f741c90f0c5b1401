// Under load NMI still serves every caller its own identity: 20 pods, 20 identities, 20,000 requests in flight at once
// across them and across several resources (so cache misses, single-flight and hits all race), every answer checked.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeToken } from '../helpers/azure.js';
import { startNmiWorld, TOKEN_PATH, type NmiWorld, type WorldIdentity, type WorldPod } from '../helpers/nmi-world.js';

const PODS = 20;
const REQUESTS = 20_000;
const RESOURCES = ['https://vault.azure.net', 'https://storage.azure.com', 'https://management.azure.com', 'https://database.windows.net'];
const CONNECTIONS_PER_POD = 16;

describe('NMI under concurrent load', () => {
  let world: NmiWorld;
  const callers: Array<{ pod: WorldPod; identity: WorldIdentity }> = [];

  beforeAll(async () => {
    world = await startNmiWorld({ compute: 'vmss' });
    for (let i = 0; i < PODS; i++) {
      const pod = await world.pod(`load-${i}`, `127.0.2.${i + 1}`);
      const identity = await world.managedIdentity(`load-id-${i}`);
      await world.assign(pod, identity);
      callers.push({ pod, identity });
    }
  }, 30_000);
  afterAll(async () => {
    await world?.stop();
  });

  it('gives every one of 20,000 concurrent requests from 20 pods its caller’s own identity', async () => {
    world.azure.emulator.clearRequestLog();
    const wrong: string[] = [];
    let ok = 0;
    const one = async (i: number) => {
      const { pod, identity } = callers[i % PODS];
      const resource = RESOURCES[Math.floor(i / PODS) % RESOURCES.length];
      const res = await world.agentFor(pod.ip, CONNECTIONS_PER_POD).request({
        origin: world.nmiUrl,
        path: `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(resource)}`,
        method: 'GET',
        headers: { Metadata: 'true' },
      });
      const text = await res.body.text();
      if (res.statusCode !== 200) {
        wrong.push(`${pod.name}: HTTP ${res.statusCode} ${text.slice(0, 120)}`);
        return;
      }
      const body = JSON.parse(text) as { access_token: string; resource: string };
      const claims = decodeToken(body.access_token);
      if (claims.appid !== identity.clientId || claims.oid !== identity.principalId || claims.aud !== resource || body.resource !== resource) {
        wrong.push(`${pod.name} asked ${resource} as ${identity.clientId}, got appid ${claims.appid} aud ${claims.aud}`);
        return;
      }
      ok++;
    };
    // All requests are issued before any is awaited: they are in flight together, queued on each pod's sockets.
    await Promise.all(Array.from({ length: REQUESTS }, (_, i) => one(i)));
    console.log(`concurrency: ${REQUESTS} requests from ${PODS} pods, ${ok} right, wrong tokens: ${wrong.length}`);
    expect(wrong.slice(0, 5)).toEqual([]);
    expect(wrong.length).toBe(0);
    expect(ok).toBe(REQUESTS);
    // Each (identity, resource) was fetched from IMDS once: concurrent misses collapsed, the rest were cache hits.
    const imdsCalls = world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token');
    expect(imdsCalls.length).toBe(PODS * RESOURCES.length);
  }, 120_000);
});
