import { ApiException, type V1Lease } from '@kubernetes/client-node';
import { getMaxListeners } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LeaderElector, parseTime, type LeaseClient } from '../../src/kube/leader.js';

// In-memory Lease API with resourceVersion checks, as the API server does them.
class MemoryLeases implements LeaseClient {
  lease: V1Lease | undefined;
  rv = 0;
  failReads = false;

  async readNamespacedLease(): Promise<V1Lease> {
    if (this.failReads) throw new ApiException(503, 'unavailable', '{"reason":"ServiceUnavailable"}', {});
    if (!this.lease) throw new ApiException(404, 'not found', '{"reason":"NotFound"}', {});
    return JSON.parse(JSON.stringify(this.lease)) as V1Lease;
  }

  async createNamespacedLease(p: { namespace: string; body: V1Lease }): Promise<V1Lease> {
    if (this.lease) throw new ApiException(409, 'exists', '{"reason":"AlreadyExists"}', {});
    return this.#store(p.body);
  }

  async replaceNamespacedLease(p: { name: string; namespace: string; body: V1Lease }): Promise<V1Lease> {
    if (p.body.metadata?.resourceVersion !== this.lease?.metadata?.resourceVersion) {
      throw new ApiException(409, 'conflict', '{"reason":"Conflict"}', {});
    }
    return this.#store(p.body);
  }

  #store(body: V1Lease): V1Lease {
    const copy = JSON.parse(JSON.stringify(body)) as V1Lease;
    copy.metadata = { ...copy.metadata, resourceVersion: String(++this.rv) };
    this.lease = copy;
    return copy;
  }
}

function elector(client: LeaseClient, identity: string, log: string[]): LeaderElector {
  return new LeaderElector({
    client,
    namespace: 'kube-system',
    name: 'mic',
    identity,
    leaseDurationMs: 15_000,
    renewDeadlineMs: 10_000,
    retryPeriodMs: 2_000,
    onStartedLeading: () => void log.push(`${identity} started`),
    onStoppedLeading: () => void log.push(`${identity} stopped`),
  });
}

describe('LeaderElector rules', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('creates the lease when absent and renews it every retry period', async () => {
    vi.useFakeTimers();
    const leases = new MemoryLeases();
    const log: string[] = [];
    const a = elector(leases, 'a', log);
    a.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(a.isLeader).toBe(true);
    expect(leases.lease?.spec?.leaseTransitions).toBe(0);
    const firstRenew = parseTime(leases.lease?.spec?.renewTime);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(parseTime(leases.lease?.spec?.renewTime)).toBe((firstRenew ?? 0) + 2_000);
    expect(parseTime(leases.lease?.spec?.acquireTime)).toBe(firstRenew);
    await a.stop();
    expect(log).toEqual(['a started', 'a stopped']);
    expect(leases.lease?.spec?.holderIdentity).toBe('');
  });

  it('lets the leadership signal carry the listeners of every write at once without a leak warning', async () => {
    vi.useFakeTimers();
    const warnings: string[] = [];
    const onWarning = (w: Error) => void warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      let signal: AbortSignal | undefined;
      const a = new LeaderElector({
        client: new MemoryLeases(), namespace: 'kube-system', name: 'mic', identity: 'a',
        onStartedLeading: (s) => void (signal = s), onStoppedLeading: () => {},
      });
      a.start();
      await vi.advanceTimersByTimeAsync(0);
      expect(signal).toBeDefined();
      expect(getMaxListeners(signal!)).toBe(512);
      // As MIC does while leading: 24 writes and 32 requests listening at once.
      for (let i = 0; i < 56; i++) signal!.addEventListener('abort', () => {});
      await a.stop();
      expect(signal!.aborted).toBe(true);
      await vi.advanceTimersByTimeAsync(0);
      vi.useRealTimers();
      await new Promise((r) => setImmediate(r));
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('does not take a lease that is still valid, and takes it (counting a transition) once expired', async () => {
    vi.useFakeTimers();
    const leases = new MemoryLeases();
    const log: string[] = [];
    const a = new LeaderElector({
      client: leases, namespace: 'kube-system', name: 'mic', identity: 'a', releaseOnStop: false,
      onStartedLeading: () => void log.push('a started'), onStoppedLeading: () => void log.push('a stopped'),
    });
    a.start();
    await vi.advanceTimersByTimeAsync(0);
    await a.stop(); // a dies without releasing
    const renewedAt = parseTime(leases.lease?.spec?.renewTime) ?? 0;
    const b = elector(leases, 'b', log);
    b.start();
    await vi.advanceTimersByTimeAsync(14_000);
    expect(b.isLeader).toBe(false);
    expect(b.observedLeader).toBe('a');
    await vi.advanceTimersByTimeAsync(4_000);
    expect(b.isLeader).toBe(true);
    expect(leases.lease?.spec?.holderIdentity).toBe('b');
    expect(leases.lease?.spec?.leaseTransitions).toBe(1);
    expect((parseTime(leases.lease?.spec?.acquireTime) ?? 0) - renewedAt).toBeGreaterThan(15_000);
    await b.stop();
  });

  it('gives up leading when renewals fail for the renew deadline', async () => {
    vi.useFakeTimers();
    const leases = new MemoryLeases();
    const log: string[] = [];
    const a = elector(leases, 'a', log);
    a.start();
    await vi.advanceTimersByTimeAsync(0);
    leases.failReads = true;
    await vi.advanceTimersByTimeAsync(8_000);
    expect(a.isLeader).toBe(true);
    await vi.advanceTimersByTimeAsync(4_000);
    expect(a.isLeader).toBe(false);
    expect(log).toEqual(['a started', 'a stopped']);
    // and competes again once the API is back
    leases.failReads = false;
    await vi.advanceTimersByTimeAsync(3_000);
    expect(a.isLeader).toBe(true);
    await a.stop();
  });

  it('rejects durations that cannot work', () => {
    const base = { client: new MemoryLeases(), namespace: 'n', name: 'l', identity: 'a', onStartedLeading: () => {}, onStoppedLeading: () => {} };
    expect(() => new LeaderElector({ ...base, leaseDurationMs: 5_000, renewDeadlineMs: 10_000 })).toThrow(/leaseDuration/);
    expect(() => new LeaderElector({ ...base, renewDeadlineMs: 2_000, retryPeriodMs: 2_000 })).toThrow(/renewDeadline/);
    expect(() => new LeaderElector({ ...base, identity: '' })).toThrow(/identity/);
  });
});
