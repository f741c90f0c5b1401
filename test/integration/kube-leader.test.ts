import { CoordinationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServerHandle } from '../../src/sandbox/apiserver/index.js';
import { loadKubeConfig } from '../../src/kube/kubeconfig.js';
import { LeaderElector, parseTime } from '../../src/kube/leader.js';
import { getJson } from '../../src/kube/list.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

interface Candidate {
  elector: LeaderElector;
  log: string[];
}

async function world(): Promise<{ server: ApiServerHandle; kc: KubeConfig; api: CoordinationV1Api }> {
  const server = await startApiServer();
  cleanups.push(() => server.stop());
  const kc = loadKubeConfig({ kubeconfigYaml: server.kubeconfigYaml });
  return { server, kc, api: kc.makeApiClient(CoordinationV1Api) };
}

// Short durations: lease 1.5 s (written as 2 s, the Lease field is whole seconds), renew deadline 1 s, retry 200 ms.
function candidate(api: CoordinationV1Api, identity: string, releaseOnStop = true): Candidate {
  const log: string[] = [];
  const elector = new LeaderElector({
    client: api,
    namespace: 'kube-system',
    name: 'mic-leader',
    identity,
    leaseDurationMs: 1500,
    renewDeadlineMs: 1000,
    retryPeriodMs: 200,
    releaseOnStop,
    onStartedLeading: () => void log.push('started'),
    onStoppedLeading: () => void log.push('stopped'),
  });
  cleanups.push(() => elector.stop());
  return { elector, log };
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface LeaseView {
  holderIdentity?: string;
  leaseTransitions?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseDurationSeconds?: number;
}

async function readLease(kc: KubeConfig): Promise<LeaseView> {
  const raw = (await getJson(kc, '/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/mic-leader')) as { spec?: LeaseView };
  return raw.spec ?? {};
}

describe('LeaderElector against the API emulator', () => {
  it('lets exactly one of two candidates lead, writing MicroTime with microsecond digits', async () => {
    const { kc, api } = await world();
    const a = candidate(api, 'replica-a');
    const b = candidate(api, 'replica-b');
    a.elector.start();
    b.elector.start();
    await waitFor(() => a.elector.isLeader || b.elector.isLeader, 'a leader');
    // over several renew periods, never both and never none
    for (let i = 0; i < 10; i++) {
      expect(Number(a.elector.isLeader) + Number(b.elector.isLeader)).toBe(1);
      await new Promise((r) => setTimeout(r, 100));
    }
    const leader = a.elector.isLeader ? 'replica-a' : 'replica-b';
    const lease = await readLease(kc);
    expect(lease.holderIdentity).toBe(leader);
    expect(lease.leaseDurationSeconds).toBe(2);
    expect(lease.renewTime).toMatch(/\.\d{6}Z$/);
    expect(lease.acquireTime).toMatch(/\.\d{6}Z$/);
    expect(a.elector.observedLeader).toBe(leader);
    expect(b.elector.observedLeader).toBe(leader);
    expect([...a.log, ...b.log]).toEqual(['started']);
  });

  it('hands over to the other candidate once the leader stops renewing and its lease expires', async () => {
    const { kc, api } = await world();
    const a = candidate(api, 'replica-a', false);
    a.elector.start();
    await waitFor(() => a.elector.isLeader, 'replica-a to lead');
    const b = candidate(api, 'replica-b');
    b.elector.start();
    await new Promise((r) => setTimeout(r, 400));
    expect(b.elector.isLeader).toBe(false);
    const before = await readLease(kc);

    await a.elector.stop(); // no release: the lease must expire
    expect(a.log).toEqual(['started', 'stopped']);
    const lastRenew = parseTime((await readLease(kc)).renewTime) ?? 0;
    await waitFor(() => b.elector.isLeader, 'replica-b to take over');

    const after = await readLease(kc);
    expect(after.holderIdentity).toBe('replica-b');
    expect(after.leaseTransitions).toBe((before.leaseTransitions ?? 0) + 1);
    // safety: the takeover did not happen before the old lease had expired
    const acquired = parseTime(after.acquireTime) ?? 0;
    expect(acquired - lastRenew).toBeGreaterThanOrEqual((before.leaseDurationSeconds ?? 0) * 1000);
  });

  it('releases the lease on stop so the other candidate takes over without waiting for expiry', async () => {
    const { kc, api } = await world();
    const a = candidate(api, 'replica-a');
    a.elector.start();
    await waitFor(() => a.elector.isLeader, 'replica-a to lead');
    const b = candidate(api, 'replica-b');
    b.elector.start();
    await a.elector.stop();
    const released = await readLease(kc);
    expect(released.holderIdentity === '' || released.holderIdentity === 'replica-b').toBe(true);
    await waitFor(() => b.elector.isLeader, 'replica-b to take over');
    expect((await readLease(kc)).holderIdentity).toBe('replica-b');
  });

  it('stops leading at once when another holder appears on the lease', async () => {
    const { kc, api } = await world();
    const a = candidate(api, 'replica-a');
    a.elector.start();
    await waitFor(() => a.elector.isLeader, 'replica-a to lead');
    // Someone else writes a fresh lease (e.g. after a network partition healed).
    const lease = await api.readNamespacedLease({ name: 'mic-leader', namespace: 'kube-system' });
    const { V1MicroTime } = await import('@kubernetes/client-node');
    await api.replaceNamespacedLease({
      name: 'mic-leader',
      namespace: 'kube-system',
      body: { ...lease, spec: { ...lease.spec, holderIdentity: 'intruder', renewTime: new V1MicroTime(), leaseDurationSeconds: 30 } },
    });
    await waitFor(() => !a.elector.isLeader, 'replica-a to step down');
    expect(a.log).toEqual(['started', 'stopped']);
    expect(a.elector.observedLeader).toBe('intruder');
    expect((await readLease(kc)).holderIdentity).toBe('intruder');
  });
});
