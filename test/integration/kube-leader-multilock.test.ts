// Leader election with the original's Endpoints lock and our Lease held together (client-go's EndpointsLeases),
// against the API emulator. The stand-in for the original MIC is written here from client-go's wire format
// (test/helpers/original-mic.ts: annotation control-plane.alpha.kubernetes.io/leader, LeaderElectionRecord JSON,
// RFC3339 times in whole seconds), with the plain CoreV1Api, not with our lock code.
import { CoordinationV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { startApiServer } from '../../src/sandbox/apiserver/index.js';
import { loadKubeConfig } from '../../src/kube/kubeconfig.js';
import { LeaderElector } from '../../src/kube/leader.js';
import { holdOriginalMicLock, readOriginalLeaderRecord, type OriginalMicLock } from '../helpers/original-mic.js';

const NS = 'default';
const NAME = 'aad-pod-identity-mic';
const ANNOTATION = 'control-plane.alpha.kubernetes.io/leader';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

interface World {
  kc: KubeConfig;
  core: CoreV1Api;
  leases: CoordinationV1Api;
}

async function world(): Promise<World> {
  const server = await startApiServer();
  cleanups.push(() => server.stop());
  const kc = loadKubeConfig({ kubeconfigYaml: server.kubeconfigYaml });
  return { kc, core: kc.makeApiClient(CoreV1Api), leases: kc.makeApiClient(CoordinationV1Api) };
}

// Lease 2 s, renew deadline 1 s, retry 200 ms.
function ours(w: World, identity: string, locks: 'both' | 'lease' = 'both'): { elector: LeaderElector; log: string[] } {
  const log: string[] = [];
  const elector = new LeaderElector({
    client: w.leases,
    ...(locks === 'both' ? { endpoints: w.core } : {}),
    namespace: NS,
    name: NAME,
    identity,
    leaseDurationMs: 2000,
    renewDeadlineMs: 1000,
    retryPeriodMs: 200,
    onStartedLeading: () => void log.push('started'),
    onStoppedLeading: () => void log.push('stopped'),
  });
  cleanups.push(() => elector.stop());
  return { elector, log };
}

function originalMic(w: World, identity: string, leaseDurationSeconds: number): OriginalMicLock {
  const lock = holdOriginalMicLock(w.core, { namespace: NS, name: NAME, identity, leaseDurationSeconds });
  cleanups.push(() => lock.stop());
  return lock;
}

/** An older release of ours (Lease only) holding the Lease and renewing it. */
function leaseOnlyMic(w: World, identity: string): { elector: LeaderElector } {
  return { elector: ours(w, identity, 'lease').elector };
}

async function endpointsRecord(w: World): Promise<Record<string, unknown> | undefined> {
  return readOriginalLeaderRecord(w.core, NS, NAME);
}

async function leaseHolder(w: World): Promise<string | undefined> {
  try {
    return (await w.leases.readNamespacedLease({ name: NAME, namespace: NS })).spec?.holderIdentity;
  } catch {
    return undefined;
  }
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Samples for `ms`: never more than one leader (and, with `exactlyOne`, never none). */
async function holdsSingleLeader(electors: LeaderElector[], ms: number, exactlyOne: boolean): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const n = electors.filter((e) => e.isLeader).length;
    expect(n).toBeLessThanOrEqual(1);
    if (exactlyOne) expect(n).toBe(1);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("leader election with the original's Endpoints lock", () => {
  it('has the API emulator guard Endpoints as the real server: 409 AlreadyExists on a second create, 409 Conflict on a stale update', async () => {
    const w = await world();
    const body = { metadata: { name: NAME, namespace: NS, annotations: { [ANNOTATION]: '{}' } } };
    const created = await w.core.createNamespacedEndpoints({ namespace: NS, body });
    await expect(w.core.createNamespacedEndpoints({ namespace: NS, body })).rejects.toMatchObject({ code: 409, body: expect.stringContaining('AlreadyExists') });
    const fresh = await w.core.replaceNamespacedEndpoints({ name: NAME, namespace: NS, body: { ...created, metadata: { ...created.metadata, annotations: { [ANNOTATION]: '{"a":1}' } } } });
    expect(fresh.metadata?.resourceVersion).not.toBe(created.metadata?.resourceVersion);
    await expect(w.core.replaceNamespacedEndpoints({ name: NAME, namespace: NS, body: created })).rejects.toMatchObject({ code: 409, body: expect.stringContaining('Conflict') });
    expect((await w.core.readNamespacedEndpoints({ name: NAME, namespace: NS })).metadata?.annotations?.[ANNOTATION]).toBe('{"a":1}');
  });

  it('does not lead (nor write a lock) while an original MIC renews its Endpoints record; takes both once it expires', async () => {
    const w = await world();
    const old = originalMic(w, 'mic-7d9f-old', 2);
    await waitFor(async () => (await endpointsRecord(w))?.holderIdentity === 'mic-7d9f-old', 'the original MIC to hold its lock');
    const a = ours(w, 'mic-new-a');
    const b = ours(w, 'mic-new-b');
    a.elector.start();
    b.elector.start();

    // Two lease durations and more: the original keeps renewing, nobody of ours leads or writes.
    await holdsSingleLeader([a.elector, b.elector], 4500, false);
    expect(a.elector.isLeader || b.elector.isLeader).toBe(false);
    expect(a.elector.observedLeader).toBe('mic-7d9f-old');
    expect((await endpointsRecord(w))?.holderIdentity).toBe('mic-7d9f-old');
    expect(await leaseHolder(w)).toBeUndefined();

    await old.stop();
    const lastRenew = old.lastRenew();
    await waitFor(() => a.elector.isLeader || b.elector.isLeader, 'one of ours to take over');
    const leader = a.elector.isLeader ? 'mic-new-a' : 'mic-new-b';
    const record = await endpointsRecord(w);
    // Not before the original's record had expired (its renewTime is whole seconds, so measure from our clock).
    expect(Date.parse(String(record?.acquireTime)) + 1000 - lastRenew).toBeGreaterThanOrEqual(2000);
    // Both locks, in the original's format, so an original MIC still running sees our hold.
    expect(Object.keys(record ?? {}).sort()).toEqual(['acquireTime', 'holderIdentity', 'leaderTransitions', 'leaseDurationSeconds', 'renewTime']);
    expect(record).toMatchObject({ holderIdentity: leader, leaseDurationSeconds: 2, leaderTransitions: 1 });
    expect(String(record?.renewTime)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(await leaseHolder(w)).toBe(leader);
    await holdsSingleLeader([a.elector, b.elector], 1500, true);
  });

  it('two of ours elect exactly one; on release the other takes both locks at once', async () => {
    const w = await world();
    const a = ours(w, 'mic-new-a');
    const b = ours(w, 'mic-new-b');
    a.elector.start();
    b.elector.start();
    await waitFor(() => a.elector.isLeader || b.elector.isLeader, 'a leader');
    await holdsSingleLeader([a.elector, b.elector], 1500, true);
    const [first, second] = a.elector.isLeader ? [a, b] : [b, a];
    const firstId = first === a ? 'mic-new-a' : 'mic-new-b';
    const secondId = first === a ? 'mic-new-b' : 'mic-new-a';
    expect((await endpointsRecord(w))?.holderIdentity).toBe(firstId);
    expect(await leaseHolder(w)).toBe(firstId);

    const stopped = Date.now();
    await first.elector.stop();
    await waitFor(() => second.elector.isLeader, 'the other to take over');
    // Released, not expired: well within one lease duration.
    expect(Date.now() - stopped).toBeLessThan(2000);
    expect((await endpointsRecord(w))?.holderIdentity).toBe(secondId);
    expect(await leaseHolder(w)).toBe(secondId);
    expect(first.log).toEqual(['started', 'stopped']);
  });

  it('also waits for a live Lease of an earlier release of ours that holds only the Lease', async () => {
    const w = await world();
    const earlier = leaseOnlyMic(w, 'mic-earlier');
    earlier.elector.start();
    await waitFor(() => earlier.elector.isLeader, 'the earlier release to lead');
    const a = ours(w, 'mic-new-a');
    a.elector.start();
    await holdsSingleLeader([earlier.elector, a.elector], 3000, true);
    expect(earlier.elector.isLeader).toBe(true);
    // The Endpoints lock is free, but another holder's live Lease means: write nothing, wait.
    expect(await endpointsRecord(w)).toBeUndefined();
    await earlier.elector.stop();
    await waitFor(() => a.elector.isLeader, 'the new release to take over');
    expect(await leaseHolder(w)).toBe('mic-new-a');
    expect((await endpointsRecord(w))?.holderIdentity).toBe('mic-new-a');
  });

  it('never takes an Endpoints lock whose record it cannot read', async () => {
    const w = await world();
    await w.core.createNamespacedEndpoints({ namespace: NS, body: { metadata: { name: NAME, namespace: NS, annotations: { [ANNOTATION]: '{"holderIdentity":' } } } });
    const a = ours(w, 'mic-new-a');
    a.elector.start();
    await holdsSingleLeader([a.elector], 3000, false);
    expect(a.elector.isLeader).toBe(false);
    const ep = await w.core.readNamespacedEndpoints({ name: NAME, namespace: NS });
    expect(ep.metadata?.annotations?.[ANNOTATION]).toBe('{"holderIdentity":');
    expect(await leaseHolder(w)).toBeUndefined();
  });
});
