// Issue 10 rows 10 and 11, performed against NMI with the real emulators: pods of one namespace flooding NMI with
// waiting requests, or with cache misses, must not keep another namespace's pod from its token.

import { afterEach, describe, expect, it } from 'vitest';
import { decodeToken } from '../helpers/azure.js';
import { startNmiWorld, TOKEN_PATH, type NmiWorld } from '../helpers/nmi-world.js';

const pathFor = (resource: string) => `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(resource)}`;

describe('NMI fairness between tenants', () => {
  let world: NmiWorld | undefined;
  afterEach(async () => {
    await world?.stop();
    world = undefined;
  });

  it('serves another namespace’s first request while 8 pods hold twice their cap of waiting requests each', async () => {
    const PER_POD = 32;
    const TOTAL = 128;
    const FLOODERS = 8;
    world = await startNmiWorld({
      nmi: {
        // As deployed: a pod with no identity waits up to 16 x 5 s for one, holding its request all along.
        retryAttemptsForCreated: 16,
        retryAttemptsForAssigned: 4,
        findIdentityRetryIntervalMs: 5_000,
        maxWaitingRequestsPerPod: PER_POD,
        maxWaitingRequests: TOTAL,
      },
    });
    const w = world;
    const flooders = [];
    for (let i = 0; i < FLOODERS; i++) flooders.push(await w.pod(`flood-${i}`, `127.0.6.${i + 1}`, { namespace: 'team-b' }));
    const victim = await w.pod('victim', '127.0.6.100', { namespace: 'team-a' });
    const identity = await w.managedIdentity('victim-id', { namespace: 'team-a' });
    await w.assign(victim, identity);

    let refused = 0;
    let other = 0;
    const flood = flooders.flatMap((pod) =>
      Array.from({ length: 2 * PER_POD }, async () => {
        const res = await w.agentFor(pod.ip, 2 * PER_POD).request({ origin: w.nmiUrl, path: pathFor('https://vault.azure.net'), method: 'GET', headers: { Metadata: 'true' } });
        await res.body.dump();
        if (res.statusCode === 429 && res.headers['retry-after'] === '1') refused++;
        else other++;
      }),
    );
    const settled = Promise.allSettled(flood);
    // Everything beyond the node-wide cap has been refused: NMI holds TOTAL requests of team-b's pods.
    await waitFor(() => refused >= FLOODERS * 2 * PER_POD - TOTAL, 'the flood to fill NMI', 20_000);
    expect(other).toBe(0);

    const first = await w.call(victim.ip, pathFor('https://vault.azure.net'));
    expect(first.status).toBe(200);
    expect(decodeToken((JSON.parse(first.body) as { access_token: string }).access_token).appid).toBe(identity.clientId);
    // Room was made by answering one flooding request early, never by letting the total grow.
    await waitFor(() => refused > FLOODERS * 2 * PER_POD - TOTAL, 'one flooding request answered early', 5_000);
    expect(refused).toBe(FLOODERS * 2 * PER_POD - TOTAL + 1);
    expect(other).toBe(0);

    await w.stop();
    world = undefined;
    await settled;
  }, 60_000);

  it('closes connections beyond a pod’s cap and, at the node-wide cap, the busiest pod’s newest, never another pod’s first', async () => {
    world = await startNmiWorld({
      nmi: { retryAttemptsForCreated: 16, retryAttemptsForAssigned: 4, findIdentityRetryIntervalMs: 5_000, maxConnectionsPerPod: 20, maxConnections: 40 },
    });
    const w = world;
    const flooders = [];
    for (let i = 0; i < 3; i++) flooders.push(await w.pod(`conn-${i}`, `127.0.9.${i + 1}`, { namespace: 'team-b' }));
    const victim = await w.pod('victim', '127.0.9.100', { namespace: 'team-a' });
    const identity = await w.managedIdentity('victim-id', { namespace: 'team-a' });
    await w.assign(victim, identity);

    let closed = 0;
    const flood = flooders.flatMap((pod) =>
      Array.from({ length: 30 }, async () => {
        try {
          const res = await w.agentFor(pod.ip, 30).request({ origin: w.nmiUrl, path: pathFor('https://vault.azure.net'), method: 'GET', headers: { Metadata: 'true' } });
          await res.body.dump();
        } catch {
          closed++;
        }
      }),
    );
    const settled = Promise.allSettled(flood);
    // 3 x 30 connections: 10 of each pod beyond its cap of 20 are closed, then the node-wide 40 closes 20 more.
    await waitFor(() => closed >= 90 - 40, 'connections beyond the caps closed', 20_000);
    expect(closed).toBe(50);

    const first = await w.call(victim.ip, pathFor('https://vault.azure.net'));
    expect(first.status).toBe(200);
    expect(decodeToken((JSON.parse(first.body) as { access_token: string }).access_token).appid).toBe(identity.clientId);
    await waitFor(() => closed > 50, 'one flooding connection closed to make room', 5_000);
    expect(closed).toBe(51);

    await w.stop();
    world = undefined;
    await settled;
  }, 60_000);

  it('lets one pod asking for 400 distinct resources start only its burst of IMDS calls, and still serves another pod', async () => {
    world = await startNmiWorld();
    const w = world;
    const greedy = await w.pod('greedy', '127.0.7.1', { namespace: 'team-b' });
    const greedyId = await w.managedIdentity('greedy-id', { namespace: 'team-b' });
    await w.assign(greedy, greedyId);
    const other = await w.pod('other', '127.0.7.2', { namespace: 'team-a' });
    const otherId = await w.managedIdentity('other-id', { namespace: 'team-a' });
    await w.assign(other, otherId);

    w.azure.emulator.clearRequestLog();
    const started = performance.now();
    const statuses = await Promise.all(
      Array.from({ length: 400 }, async (_, i) => {
        const res = await w.agentFor(greedy.ip, 16).request({ origin: w.nmiUrl, path: pathFor(`https://resource-${i}.example`), method: 'GET', headers: { Metadata: 'true' } });
        const body = await res.body.text();
        if (res.statusCode === 429) expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        else if (res.statusCode === 200) expect(decodeToken((JSON.parse(body) as { access_token: string }).access_token).appid).toBe(greedyId.clientId);
        return res.statusCode;
      }),
    );
    const elapsedS = (performance.now() - started) / 1000;
    const imdsCalls = w.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token').length;
    // Default --pod-token-miss-burst 20 and --pod-token-miss-rate 10/s.
    const allowed = 20 + Math.ceil(10 * elapsedS);
    console.log(`miss flood: 400 requests in ${elapsedS.toFixed(2)} s, ${imdsCalls} IMDS calls (allowed ${allowed}), ${statuses.filter((s) => s === 429).length} answered 429`);
    expect(imdsCalls).toBeLessThanOrEqual(allowed);
    expect(statuses.filter((s) => s === 200).length).toBe(imdsCalls);
    expect(statuses.every((s) => s === 200 || s === 429)).toBe(true);

    const served = await w.call(other.ip, pathFor('https://vault.azure.net'));
    expect(served.status).toBe(200);
    expect(decodeToken((JSON.parse(served.body) as { access_token: string }).access_token).appid).toBe(otherId.clientId);
  }, 60_000);

  it('charges the fetches an object_id request starts (to learn its own identity\'s principal) to that pod\'s miss bucket', async () => {
    world = await startNmiWorld();
    const w = world;
    const greedy = await w.pod('oid-greedy', '127.0.7.3', { namespace: 'team-b' });
    const greedyId = await w.managedIdentity('oid-greedy-id', { namespace: 'team-b' });
    await w.assign(greedy, greedyId);
    // IMDS refuses a resource it does not know (AADSTS500011): the principal is never learnt, so every distinct
    // resource would be another IMDS call if nothing charged the pod for it.
    w.azure.emulator.injectFault({
      operation: 'imds_token',
      target: greedyId.clientId,
      status: 400,
      count: 10_000,
      body: { error: 'invalid_resource', error_description: 'AADSTS500011: The resource principal named https://x.example was not found in the tenant.' },
    });
    w.azure.emulator.clearRequestLog();
    const started = performance.now();
    const objectId = '5d9e2c1a-0f3b-4e8d-9a6c-7b1e2f3a4c5d';
    const statuses = await Promise.all(
      Array.from({ length: 300 }, async (_, i) => {
        const path = `${pathFor(`https://unknown-${i}.example`)}&object_id=${objectId}`;
        const res = await w.agentFor(greedy.ip, 16).request({ origin: w.nmiUrl, path, method: 'GET', headers: { Metadata: 'true' } });
        await res.body.dump();
        return res.statusCode;
      }),
    );
    const elapsedS = (performance.now() - started) / 1000;
    const imdsCalls = w.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token').length;
    const allowed = 20 + Math.ceil(10 * elapsedS);
    expect(imdsCalls, `${imdsCalls} IMDS calls in ${elapsedS.toFixed(2)} s`).toBeLessThanOrEqual(allowed);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    // 403: the pod's own identity failed upstream (NMI's answer for any IMDS error); 429: its miss bucket is empty.
    expect([...new Set(statuses)].sort()).toEqual([403, 429]);
  }, 60_000);
});

async function waitFor(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
