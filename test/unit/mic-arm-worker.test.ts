// The per-target ARM worker, driven by a ManualClock over an in-memory compute port: it coalesces what arrives
// during a PATCH into one follow-up PATCH, holds a target after a 409 and retries when the hold passes, honours
// Retry-After, drops an identity ARM refuses without blocking the others, and stops for good on lost leadership.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/common/clock.js';
import type { ArmTarget, ComputeIdentityPort } from '../../src/mic/arm/compute.js';
import type { IdentityPatch, IdentityState } from '../../src/mic/arm/delta.js';
import { ArmWorkers, type ArmWorkersOptions } from '../../src/mic/arm/worker.js';
import type { ComputeTargetRef } from '../../src/mic/core/index.js';

const logger = pino({ level: 'silent' });
const id = (n: number | string): string =>
  `/subscriptions/sub-1/resourcegroups/rg-1/providers/microsoft.managedidentity/userassignedidentities/id-${n}`;
const ss1: ComputeTargetRef = { kind: 'vmss', name: 'ss1', resourceGroup: 'rg-1', key: 'vmss/rg-1/ss1' };

/** VM/VMSS identities in memory. Each call is logged with the clock's time; PATCHes can be held or failed. */
class FakeCompute implements ComputeIdentityPort {
  readonly calls: { op: 'GET' | 'PATCH'; at: number; adds: readonly string[] }[] = [];
  readonly ids = new Map<string, Set<string>>();
  readonly faults: (() => unknown)[] = [];
  #gate: Promise<void> | undefined;
  constructor(private readonly clock: ManualClock) {}

  /** Holds every PATCH until the returned function is called. */
  holdPatches(): () => void {
    let release!: () => void;
    this.#gate = new Promise((r) => (release = r));
    return () => {
      this.#gate = undefined;
      release();
    };
  }

  async get(target: ArmTarget): Promise<IdentityState> {
    this.calls.push({ op: 'GET', at: this.clock.now(), adds: [] });
    const ids = this.ids.get(target.name) ?? new Set<string>();
    return { type: ids.size > 0 ? 'UserAssigned' : 'None', userAssigned: new Map([...ids].map((i) => [i, { id: i }])) };
  }

  async patch(target: ArmTarget, patch: IdentityPatch): Promise<void> {
    this.calls.push({ op: 'PATCH', at: this.clock.now(), adds: patch.adds });
    const fault = this.faults.shift();
    if (fault !== undefined) throw fault();
    if (this.#gate !== undefined) await this.#gate;
    const ids = this.ids.get(target.name) ?? new Set<string>();
    for (const i of patch.adds) ids.add(i);
    for (const i of patch.removes) ids.delete(i);
    this.ids.set(target.name, ids);
  }

  patches(): { at: number; adds: readonly string[] }[] {
    return this.calls.filter((c) => c.op === 'PATCH');
  }
}

function world(opts: Partial<ArmWorkersOptions> = {}) {
  const clock = new ManualClock(1_000_000);
  const port = new FakeCompute(clock);
  const workers = new ArmWorkers({ port, logger, clock, retryBaseMs: 1000, maxRetryDelayMs: 60_000, ...opts });
  let settled = 0;
  workers.onSettled(() => settled++);
  /** Lets every promise chain run (no time passes). */
  const flush = (): Promise<void> => clock.advance(0);
  return { clock, port, workers, settledCount: () => settled, flush };
}

const attached = (w: ArmWorkers): readonly string[] | undefined => w.attachments([ss1.key]).get(ss1.key)?.ids;

const errorWith = (statusCode: number, extra: Record<string, unknown> = {}) => (): Error =>
  Object.assign(new Error(String(extra.message ?? `status ${statusCode}`)), { statusCode, ...extra });

describe('ARM worker', () => {
  it('coalesces three changes made while a PATCH is in flight into one follow-up PATCH', async () => {
    const { port, workers, settledCount, flush } = world();
    const release = port.holdPatches();
    expect(workers.worker(ss1).want([id(1)], [])).toBe(true);
    await flush();
    expect(port.patches()).toHaveLength(1);
    // Three cycles, each wanting one more identity, while the first PATCH runs.
    expect(workers.worker(ss1).want([id(1), id(2)], [])).toBe(false);
    expect(workers.worker(ss1).want([id(1), id(2), id(3)], [])).toBe(false);
    expect(workers.worker(ss1).want([id(1), id(2), id(3), id(4)], [])).toBe(false);
    expect(workers.attachments([ss1.key]).get(ss1.key)).toBeUndefined(); // not known until the batch settles
    release();
    await workers.idle();
    await flush();
    expect(port.patches().map((p) => [...p.adds].sort())).toEqual([[id(1)], [id(2), id(3), id(4)]]);
    expect([...(attached(workers) ?? [])].sort()).toEqual([id(1), id(2), id(3), id(4)]);
    expect(settledCount()).toBe(2); // one cycle per settled batch
  });

  it('holds the target after a 409: no PATCH until the hold passes, then retries by itself', async () => {
    const { clock, port, workers, settledCount, flush } = world({ maxRetries: 0 });
    port.faults.push(errorWith(409, { code: 'Conflict', message: 'Another operation is in progress' }));
    workers.worker(ss1).want([id(1)], []);
    await workers.idle();
    expect(port.patches()).toHaveLength(1);
    expect(workers.holdRemainingMs(ss1.key)).toBe(1000);
    expect(workers.attachments([ss1.key]).get(ss1.key)?.unsettled).toEqual([id(1)]); // still wanted: no step counts on it
    expect(workers.worker(ss1).want([id(1)], [])).toBe(false); // the next cycle asks again: held
    await clock.advance(999);
    expect(port.patches()).toHaveLength(1);
    const settledBefore = settledCount();
    await clock.advance(1);
    await workers.idle();
    await flush();
    expect(port.patches()).toHaveLength(2);
    expect(port.patches()[1]!.at).toBeGreaterThanOrEqual(port.patches()[0]!.at + 1000);
    expect(attached(workers)).toEqual([id(1)]);
    expect(workers.holdRemainingMs(ss1.key)).toBeUndefined();
    expect(settledCount()).toBeGreaterThan(settledBefore);
  });

  it('honours Retry-After: after a 429 with Retry-After: 7 no call goes out before 7 s of clock', async () => {
    const { clock, port, workers, flush } = world();
    port.faults.push(errorWith(429, { response: { headers: { get: (h: string) => (h === 'retry-after' ? '7' : undefined) } } }));
    workers.worker(ss1).want([id(1)], []);
    await flush();
    const failedAt = clock.now();
    expect(port.calls.map((c) => c.op)).toEqual(['GET', 'PATCH']);
    await clock.advance(6999);
    expect(port.calls).toHaveLength(2);
    await clock.advance(1);
    await workers.idle();
    expect(port.calls.map((c) => c.op)).toEqual(['GET', 'PATCH', 'GET', 'PATCH']);
    expect(port.calls[2]!.at - failedAt).toBeGreaterThanOrEqual(7000);
    expect(attached(workers)).toEqual([id(1)]);
  });

  it('drops an identity ARM refuses (400 identity not found) and attaches the others of the batch at once', async () => {
    const { clock, port, workers, settledCount, flush } = world();
    const bad = id('bad');
    port.faults.push(errorWith(400, { code: 'FailedIdentityOperation', message: `Identity '${bad}' not found.` }));
    workers.worker(ss1).want([id(1), bad, id(2)], []);
    await workers.idle();
    expect(port.patches().map((p) => [...p.adds].sort())).toEqual([[bad, id(1), id(2)].sort(), [id(1), id(2)]]);
    expect([...(attached(workers) ?? [])].sort()).toEqual([id(1), id(2)]);
    expect(workers.failure(ss1.key, bad)?.outcome).toMatchObject({ status: 'failed', reason: 'FailedIdentityOperation' });
    expect(workers.failure(ss1.key, id(1))).toBeUndefined();
    expect(workers.holdRemainingMs(ss1.key)).toBeUndefined(); // the target is not held for one bad identity
    // The next cycle still wants it: not asked again before its backoff, while a new identity goes through.
    expect(workers.worker(ss1).want([id(1), bad, id(2), id(3)], [])).toBe(true);
    await workers.idle();
    expect(port.patches().at(-1)!.adds).toEqual([id(3)]);
    const settledBefore = settledCount();
    await clock.advance(1000);
    await flush();
    expect(settledCount()).toBeGreaterThan(settledBefore); // its backoff passed: a cycle may ask again
    workers.worker(ss1).want([id(1), bad, id(2), id(3)], []);
    await workers.idle();
    expect(port.patches().at(-1)!.adds).toEqual([bad]);
  });

  it('stops on lost leadership: no further ARM call, pending changes cleared, no cycle enqueued after', async () => {
    const { clock, port, workers, settledCount, flush } = world({ maxRetries: 0 });
    const release = port.holdPatches();
    workers.worker(ss1).want([id(1)], []);
    await flush();
    workers.worker(ss1).want([id(1), id(2)], []); // pending behind the PATCH in flight
    const other: ComputeTargetRef = { kind: 'vm', name: 'vm1', resourceGroup: 'rg-1', key: 'vm/rg-1/vm1' };
    port.faults.push(errorWith(500));
    workers.worker(other).want([id(3)], []); // its PATCH fails: held, to retry in 1 s
    await flush();
    const calls = port.calls.length;
    const settled = settledCount();
    workers.cancel();
    release();
    await clock.advance(120_000);
    await flush();
    expect(port.calls).toHaveLength(calls);
    expect(settledCount()).toBe(settled);
    expect(clock.pendingSleeps()).toBe(0);
    // The next term starts from nothing known.
    expect(workers.attachments([ss1.key, other.key]).size).toBe(0);
  });
});
