// Issue 10 row 8: NMI cut off from the API server's watch (the stream stays open, nothing arrives), the victim pod
// deleted, another namespace's pod given the victim's IP. NMI's cached view still names the victim at that IP; once
// the view is older than --pod-view-max-staleness NMI must confirm the caller with a live GET or refuse (503).

import * as k8s from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeToken } from '../helpers/azure.js';
import { NODE, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type WorldIdentity, type WorldPod } from '../helpers/nmi-world.js';

const MAX_STALENESS_MS = 1_000;
const PATH = `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}`;
const VICTIM_IP = '127.0.3.1';

describe('NMI with a pod view it cannot trust', () => {
  let world: NmiWorld;
  let victim: WorldPod;
  let identity: WorldIdentity;

  beforeEach(async () => {
    world = await startNmiWorld({ nmi: { podViewMaxStalenessMs: MAX_STALENESS_MS } });
    victim = await world.pod('victim', VICTIM_IP, { namespace: 'team-a' });
    identity = await world.managedIdentity('victim-id', { namespace: 'team-a' });
    await world.assign(victim, identity);
    // The victim's token is cached: the warm path would answer the next request from this IP without waiting.
    const first = await world.call(VICTIM_IP, PATH);
    expect(first.status).toBe(200);
    expect(decodeToken(tokenOf(first.body)).appid).toBe(identity.clientId);
  }, 30_000);

  afterEach(async () => {
    world?.api.server.resumeWatches();
    await world?.stop();
  });

  /** Silences every watch and waits until NMI's pod view is older than its bound (a condition, not a sleep). */
  async function cutOffWatches(): Promise<void> {
    world.api.server.holdWatches();
    await world.until((n) => n.podViewAgeMs() > MAX_STALENESS_MS, 'pod view stale', 10_000);
  }

  it('refuses the victim’s token to a pod of another namespace that took the deleted victim’s IP', async () => {
    world.api.server.holdWatches();
    await world.core.deleteNamespacedPod({ name: 'victim', namespace: 'team-a' });
    await world.core.createNamespace({ body: { metadata: { name: 'team-b' } } });
    await world.core.createNamespacedPod({
      namespace: 'team-b',
      body: { metadata: { name: 'attacker', labels: { app: 'attacker' } }, spec: { nodeName: NODE, containers: [{ name: 'app', image: 'busybox' }] } },
    });
    await world.core.patchNamespacedPodStatus(
      { name: 'attacker', namespace: 'team-b', body: { status: { phase: 'Running', podIP: VICTIM_IP, podIPs: [{ ip: VICTIM_IP }] } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    await world.until((n) => n.podViewAgeMs() > MAX_STALENESS_MS, 'pod view stale', 10_000);
    // NMI heard none of it: its view still has the victim at that IP.
    const cached = world.nmi?.pods.lookup(VICTIM_IP);
    expect(cached?.kind === 'pod' ? cached.pod.uid : cached?.kind).toBe(victim.uid);

    const reply = await world.call(VICTIM_IP, PATH);
    expect(reply.body).not.toContain('access_token');
    expect(reply.status).toBe(503);
    expect(reply.headers['retry-after']).toBe('1');
    // Nothing sent to the caller names the pod NMI confused it with.
    expect(reply.body).not.toContain('victim');

    // Once the watch is heard again NMI knows the caller, and it has no identity: without a binding label, past the
    // wait window, IMDS's own refusal (docs/migrating.md).
    world.api.server.resumeWatches();
    await world.until((n) => {
      const c = n.pods.lookup(VICTIM_IP);
      return c.kind === 'pod' && c.pod.name === 'attacker';
    }, 'attacker seen at the victim’s IP');
    const after = await world.call(VICTIM_IP, PATH);
    expect(after.body).not.toContain('access_token');
    expect(after.status).toBe(400);
    expect(after.body).toBe('{"error":"invalid_request","error_description":"Identity not found"}');
  }, 30_000);

  it('serves a caller the API server confirms live while the watch is silent', async () => {
    await cutOffWatches();
    const before = world.api.server.requestLog().length;
    const replies = await Promise.all([1, 2, 3, 4].map(() => world.call(VICTIM_IP, PATH)));
    for (const reply of replies) {
      expect(reply.status).toBe(200);
      expect(decodeToken(tokenOf(reply.body)).appid).toBe(identity.clientId);
    }
    // One GET: concurrent checks of one caller share it.
    const gets = world.api.server.requestLog().slice(before).filter((e) => e.method === 'GET' && e.path === '/api/v1/namespaces/team-a/pods/victim');
    expect(gets.length).toBe(1);
  }, 30_000);

  it('answers 503 when the live check cannot reach the API server', async () => {
    await cutOffWatches();
    world.api.server.injectFault({ method: 'GET', pathPrefix: '/api/v1/namespaces/team-a/pods/victim', status: 500, count: 1, watch: false });
    const reply = await world.call(VICTIM_IP, PATH);
    expect(reply.body).not.toContain('access_token');
    expect(reply.status).toBe(503);
    expect(reply.headers['retry-after']).toBe('1');
  }, 30_000);

  it('refuses a pod that the API server says was recreated under the same name', async () => {
    world.api.server.holdWatches();
    await world.core.deleteNamespacedPod({ name: 'victim', namespace: 'team-a' });
    await world.core.createNamespacedPod({
      namespace: 'team-a',
      body: { metadata: { name: 'victim', labels: { other: 'pod' } }, spec: { nodeName: NODE, containers: [{ name: 'app', image: 'busybox' }] } },
    });
    await world.core.patchNamespacedPodStatus(
      { name: 'victim', namespace: 'team-a', body: { status: { phase: 'Running', podIP: VICTIM_IP, podIPs: [{ ip: VICTIM_IP }] } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    await world.until((n) => n.podViewAgeMs() > MAX_STALENESS_MS, 'pod view stale', 10_000);
    const reply = await world.call(VICTIM_IP, PATH);
    expect(reply.body).not.toContain('access_token');
    expect(reply.status).toBe(503);
  }, 30_000);
});

function tokenOf(body: string): string {
  return (JSON.parse(body) as { access_token: string }).access_token;
}
