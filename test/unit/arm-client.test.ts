// The ARM identity client's scheduling and retry logic over an in-memory compute port (no sockets).
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { Clock } from '../../src/common/clock.js';
import type { ArmOperation } from '../../src/mic/arm/batch.js';
import { createArmIdentityClient } from '../../src/mic/arm/client.js';
import type { ArmTarget, ComputeIdentityPort } from '../../src/mic/arm/compute.js';
import type { IdentityPatch, IdentityState } from '../../src/mic/arm/delta.js';

const id = (n: string | number): string =>
  `/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-${n}`;
const key = (n: string | number): string => id(n).toLowerCase();
const logger = pino({ level: 'silent' });

/** A fast-forward clock: sleeping advances time at once and records how long was waited. */
function fakeClock(): Clock & { slept: number[] } {
  let t = 1_000_000;
  const slept: number[] = [];
  return {
    slept,
    now: () => t,
    sleep: async (ms) => {
      slept.push(ms);
      t += ms;
      await Promise.resolve();
    },
  };
}

interface FakeResource {
  type: string;
  ids: Map<string, { id: string; clientId?: string }>;
}

/** In-memory VM/VMSS identities with hooks to hold a PATCH in flight or fail the next call. */
class FakePort implements ComputeIdentityPort {
  readonly resources = new Map<string, FakeResource>();
  readonly calls: string[] = [];
  readonly patches: { target: string; patch: IdentityPatch }[] = [];
  /** Errors to throw from the next calls of an operation, consumed one per call. */
  readonly faults: { op: 'get' | 'patch'; err: () => unknown; times: number }[] = [];
  hold: Promise<void> | undefined;
  denied = new Set<string>();

  add(name: string, type = 'UserAssigned', ids: string[] = [], clientIds: Record<string, string> = {}): void {
    const map = new Map<string, { id: string; clientId?: string }>();
    for (const i of ids) map.set(i.toLowerCase(), clientIds[i] ? { id: i, clientId: clientIds[i]! } : { id: i });
    this.resources.set(name, { type, ids: map });
  }

  async get(target: ArmTarget): Promise<IdentityState> {
    this.calls.push(`GET ${target.name}`);
    this.maybeFail('get');
    const r = this.resources.get(target.name);
    if (!r) throw Object.assign(new Error('not found'), { statusCode: 404, code: 'ResourceNotFound' });
    return { type: r.type, userAssigned: new Map(r.ids) };
  }

  async patch(target: ArmTarget, patch: IdentityPatch): Promise<void> {
    this.calls.push(`PATCH ${target.name}`);
    this.patches.push({ target: target.name, patch });
    this.maybeFail('patch');
    const bad = Object.keys(patch.userAssignedIdentities ?? {}).filter((i) => this.denied.has(i.toLowerCase()));
    if (bad.length > 0) {
      throw Object.assign(
        new Error(`does not have permission ... on the linked scope(s) '${bad.join(',')}' or the linked scope(s) are invalid.`),
        { statusCode: 403, code: 'LinkedAuthorizationFailed' },
      );
    }
    if (this.hold) await this.hold;
    const r = this.resources.get(target.name)!;
    if (!patch.userAssignedIdentities) r.ids.clear();
    for (const [i, v] of Object.entries(patch.userAssignedIdentities ?? {})) {
      if (v === null) r.ids.delete(i.toLowerCase());
      else r.ids.set(i.toLowerCase(), { id: i });
    }
    r.type = patch.type;
  }

  fail(op: 'get' | 'patch', err: () => unknown, times = 1): void {
    this.faults.push({ op, err, times });
  }

  private maybeFail(op: 'get' | 'patch'): void {
    const f = this.faults.find((x) => x.op === op && x.times > 0);
    if (!f) return;
    f.times--;
    throw f.err();
  }

  idsOf(name: string): string[] {
    return [...this.resources.get(name)!.ids.keys()].sort();
  }
}

function client(port: FakePort, extra: Partial<Parameters<typeof createArmIdentityClient>[0]> = {}) {
  return createArmIdentityClient({ port, logger, clock: fakeClock(), retryIntervalMs: 10, ...extra });
}

describe('ArmIdentityClient.apply', () => {
  it('attaches and detaches, reporting each identity, in one GET and one PATCH', async () => {
    const port = new FakePort();
    port.add('vm1', 'UserAssigned', [id(1)]);
    const res = await client(port).apply({ kind: 'vm', name: 'vm1' }, { add: [id(2)], remove: [id(1)] });
    expect(res.ok).toBe(true);
    expect(res.patchCount).toBe(1);
    expect(res.outcomes.map((o) => [o.key, o.status])).toEqual([
      [key(1), 'detached'],
      [key(2), 'attached'],
    ]);
    expect(port.idsOf('vm1')).toEqual([key(2)]);
    expect(port.calls).toEqual(['GET vm1', 'PATCH vm1']);
  });

  it('sends no PATCH when nothing changes, and no call at all for an empty request', async () => {
    const port = new FakePort();
    port.add('vm1', 'UserAssigned', [id(1)]);
    const c = client(port);
    const res = await c.apply({ kind: 'vm', name: 'vm1' }, { add: [id(1).toUpperCase()], remove: [id(9)] });
    expect(res.patchCount).toBe(0);
    expect(res.outcomes.map((o) => o.status)).toEqual(['detached', 'attached']);
    await c.apply({ kind: 'vm', name: 'vm1' }, {});
    expect(port.calls).toEqual(['GET vm1']);
  });

  it('rejects malformed identity IDs without calling ARM', async () => {
    const port = new FakePort();
    port.add('vm1');
    const res = await client(port).apply({ kind: 'vm', name: 'vm1' }, { add: ['not-an-id'] });
    expect(res.ok).toBe(false);
    expect(res.outcomes[0]).toMatchObject({ status: 'failed', reason: 'invalidId' });
    expect(port.calls).toEqual([]);
  });

  it('keeps immutable identities (by client ID, any case) and the system-assigned identity', async () => {
    const port = new FakePort();
    port.add('vm1', 'SystemAssigned, UserAssigned', [id(1), id(2)], { [id(1)]: 'CLUSTER-client' });
    const res = await client(port, { immutableIdentities: ['cluster-CLIENT'] }).apply({ kind: 'vm', name: 'vm1' }, { remove: [id(1), id(2)] });
    expect(res.outcomes.map((o) => o.status)).toEqual(['kept', 'detached']);
    expect(port.idsOf('vm1')).toEqual([key(1)]);
    expect(port.resources.get('vm1')!.type).toBe('SystemAssigned, UserAssigned');
  });

  it('asks alsoImmutable at every plan, so an identity protected later (a reloaded cluster identity) is kept', async () => {
    const port = new FakePort();
    port.add('vm1', 'UserAssigned', [id(1), id(2), id(3)], { [id(1)]: 'first-cluster', [id(2)]: 'later-cluster' });
    const later = new Set<string>();
    const c = client(port, {
      immutableIdentities: ['first-cluster'],
      alsoImmutable: { has: (_key, clientId) => clientId !== undefined && later.has(clientId) },
    });
    later.add('later-cluster');
    const res = await c.apply({ kind: 'vm', name: 'vm1' }, { remove: [id(1), id(2), id(3)] });
    expect(res.outcomes.map((o) => o.status)).toEqual(['kept', 'kept', 'detached']);
    expect(port.idsOf('vm1')).toEqual([key(1), key(2)]);
  });

  it('drops identities ARM refuses (LinkedAuthorizationFailed), attaches the rest, and reports both', async () => {
    const port = new FakePort();
    port.add('ss1', 'None');
    port.denied.add(key(2));
    const res = await client(port).apply({ kind: 'vmss', name: 'ss1' }, { add: [id(1), id(2), id(3)] });
    expect(res.outcomes.map((o) => [o.key, o.status])).toEqual([
      [key(1), 'attached'],
      [key(2), 'failed'],
      [key(3), 'attached'],
    ]);
    expect(res.outcomes[1]).toMatchObject({ reason: 'LinkedAuthorizationFailed' });
    expect(res.ok).toBe(false);
    expect(port.idsOf('ss1')).toEqual([key(1), key(3)]);
    expect(res.patchCount).toBe(2);
  });

  it('waits out a 429 Retry-After, then succeeds; a later call to the throttled target waits too', async () => {
    const port = new FakePort();
    port.add('vm1');
    const clock = fakeClock();
    const c = createArmIdentityClient({ port, logger, clock });
    port.fail('patch', () =>
      Object.assign(new Error('Too many requests'), { statusCode: 429, response: { headers: { get: (h: string) => (h === 'retry-after' ? '7' : undefined) } } }),
    );
    const res = await c.apply({ kind: 'vm', name: 'vm1' }, { add: [id(1)] });
    expect(res.outcomes[0]!.status).toBe('attached');
    expect(clock.slept).toContain(7000);
    expect(port.calls).toEqual(['GET vm1', 'PATCH vm1', 'GET vm1', 'PATCH vm1']);
  });

  it('fails fast as throttled when Retry-After is longer than it may wait, and gates the next call', async () => {
    const port = new FakePort();
    port.add('vm1');
    const c = client(port, { maxThrottleWaitMs: 1000 });
    port.fail('get', () => Object.assign(new Error('Too many requests'), { statusCode: 429, response: { headers: { get: (h: string) => (h === 'retry-after' ? '120' : undefined) } } }));
    const first = await c.apply({ kind: 'vm', name: 'vm1' }, { add: [id(1)] });
    expect(first.outcomes[0]).toMatchObject({ status: 'failed', reason: 'throttled', retryAfterMs: 120_000 });
    const second = await c.apply({ kind: 'vm', name: 'vm1' }, { add: [id(1)] });
    expect(second.outcomes[0]).toMatchObject({ status: 'failed', reason: 'throttled' });
    expect(port.calls).toEqual(['GET vm1']); // the gated call never reached ARM
  });

  it('retries 5xx a bounded number of times, then reports retryable failure with the real state', async () => {
    const port = new FakePort();
    port.add('vm1');
    const c = client(port, { maxRetries: 1 });
    port.fail('patch', () => Object.assign(new Error('boom'), { statusCode: 500 }), 10);
    const res = await c.apply({ kind: 'vm', name: 'vm1' }, { add: [id(1)] });
    expect(res.outcomes[0]).toMatchObject({ status: 'failed', reason: 'retryable' });
    expect(port.calls.filter((x) => x.startsWith('PATCH'))).toHaveLength(2);
    // It read the state back after the failure, as the original's failure path does.
    expect(port.calls.at(-1)).toBe('GET vm1');
  });

  it('reports a missing VM as notFound for every identity, without throwing', async () => {
    const res = await client(new FakePort()).apply({ kind: 'vm', name: 'ghost' }, { add: [id(1)], remove: [id(2)] });
    expect(res.outcomes.map((o) => o.status === 'failed' && o.reason)).toEqual(['notFound', 'notFound']);
  });

  it('feeds onCall with each operation and its error', async () => {
    const port = new FakePort();
    port.add('ss1');
    const seen: [ArmOperation, boolean][] = [];
    await client(port, { onCall: (op, _ms, err) => seen.push([op, err !== undefined]) }).apply({ kind: 'vmss', name: 'ss1' }, { add: [id(1)] });
    await client(port, { onCall: (op, _ms, err) => seen.push([op, err !== undefined]) }).apply({ kind: 'vm', name: 'nope' }, { add: [id(1)] });
    expect(seen).toEqual([
      ['vmss_get', false],
      ['vmss_update', false],
      ['vm_get', true],
    ]);
  });
});

describe('ArmIdentityClient scheduling', () => {
  it('coalesces calls for one target made while a PATCH is in flight into the next PATCH', async () => {
    const port = new FakePort();
    port.add('ss1');
    let release!: () => void;
    port.hold = new Promise((r) => (release = r));
    const c = client(port);
    const t = { kind: 'vmss', name: 'ss1' } as const;
    const first = c.apply(t, { add: [id(0)] });
    while (port.patches.length === 0) await new Promise((r) => setImmediate(r));
    const rest = Array.from({ length: 99 }, (_, i) => c.apply(t, { add: [id(i + 1)] }));
    release();
    port.hold = undefined;
    const results = await Promise.all([first, ...rest]);
    expect(port.patches).toHaveLength(2);
    expect(results.every((r) => r.ok && r.outcomes.length === 1 && r.outcomes[0]!.status === 'attached')).toBe(true);
    expect(results[50]!.outcomes[0]!.key).toBe(key(50));
    expect(port.idsOf('ss1')).toHaveLength(100);
  });

  it('lets the latest pending request win for the same identity', async () => {
    const port = new FakePort();
    port.add('ss1');
    let release!: () => void;
    port.hold = new Promise((r) => (release = r));
    const c = client(port);
    const t = { kind: 'vmss', name: 'ss1' } as const;
    const first = c.apply(t, { add: [id(0)] });
    while (port.patches.length === 0) await new Promise((r) => setImmediate(r));
    const add = c.apply(t, { add: [id(1)] });
    const remove = c.apply(t, { remove: [id(1)] });
    release();
    port.hold = undefined;
    await first;
    expect((await add).outcomes[0]!.status).toBe('superseded');
    expect((await remove).outcomes[0]!.status).toBe('detached');
    expect(port.idsOf('ss1')).toEqual([key(0)]);
    expect(port.patches).toHaveLength(1); // the second batch changed nothing: no PATCH
  });

  it('runs different targets concurrently up to maxConcurrency', async () => {
    const port = new FakePort();
    for (const n of ['a', 'b', 'c']) port.add(n);
    let release!: () => void;
    port.hold = new Promise((r) => (release = r));
    const c = client(port, { maxConcurrency: 2 });
    const all = ['a', 'b', 'c'].map((n) => c.apply({ kind: 'vmss', name: n }, { add: [id(n)] }));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(port.patches.map((p) => p.target)).toEqual(['a', 'b']); // c waits for a slot
    release();
    port.hold = undefined;
    await Promise.all(all);
    expect(port.patches.map((p) => p.target)).toEqual(['a', 'b', 'c']);
  });
});

describe('ArmIdentityClient.getIdentities', () => {
  it('returns canonical IDs and whether a system-assigned identity is present', async () => {
    const port = new FakePort();
    port.add('vm1', 'SystemAssigned, UserAssigned', [id('B'), id('a')]);
    expect(await client(port).getIdentities({ kind: 'vm', name: 'vm1' })).toEqual({ ids: [key('a'), key('b')], systemAssigned: true });
  });
});
