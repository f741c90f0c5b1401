// The executor with in-memory ports and the real per-target ARM workers over a fake compute port, driven as the
// controller drives them (a settled ARM change runs the next cycle): Kubernetes writes never wait behind ARM, only
// the steps that depend on an ARM outcome do; an identity change in flight is not asked for twice; failures hold
// the target and ask for a later cycle; the spam filter bounds events per object.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ASSIGNED_IDENTITY_FINALIZER } from '../../src/crds/names.js';
import { normalizeAssignedIdentity } from '../../src/crds/normalize.js';
import type { AzureAssignedIdentity } from '../../src/crds/types.js';
import { kubeEventSink } from '../../src/mic/adapters/events.js';
import { assignedIdentityWire } from '../../src/mic/adapters/kube-assigned.js';
import { ManualClock } from '../../src/common/clock.js';
import type { ArmTarget, ComputeIdentityPort } from '../../src/mic/arm/compute.js';
import type { IdentityPatch, IdentityState } from '../../src/mic/arm/delta.js';
import { ArmWorkers } from '../../src/mic/arm/worker.js';
import type { ClusterSnapshot } from '../../src/mic/core/index.js';
import { Executor, type ExecutionContext, type ExecutionOutcome } from '../../src/mic/executor.js';
import { createMicMetrics } from '../../src/mic/metrics.js';
import type { AssignedIdentityWriter, EventSink, EventSubject } from '../../src/mic/ports.js';
import type { EventRecorder } from '../../src/kube/events.js';
import { aai, attached, binding, cid, identity, pod, run, snapshot, vmNode, vmssNode } from './mic-core.builders.js';

const log = pino({ level: 'silent' });

/** Records writes in order; each answers the object as an API server would (status carried, rv bumped). */
class FakeWriter implements AssignedIdentityWriter {
  readonly calls: string[] = [];
  #rv = 100;
  fail = new Set<string>();
  create: AssignedIdentityWriter['create'] = async (spec) => this.#answer(`create ${spec.name}`, { ...spec, state: 'Created' } as const);
  replace: AssignedIdentityWriter['replace'] = async (ref, _rv, spec) => this.#answer(`replace ${ref.name}`, spec);
  setState: AssignedIdentityWriter['setState'] = async (ref, state) => {
    this.#check(`status ${ref.name} ${state}`);
    return { ...(ref as AzureAssignedIdentity), state, resourceVersion: String(++this.#rv) };
  };
  delete: AssignedIdentityWriter['delete'] = async (ref) => {
    this.#check(`delete ${ref.name}`);
    // Still there, held by our finalizer.
    return { ...(ref as AzureAssignedIdentity), finalizers: [ASSIGNED_IDENTITY_FINALIZER], deleting: true, resourceVersion: String(++this.#rv) };
  };
  removeFinalizer: AssignedIdentityWriter['removeFinalizer'] = async (ref) => {
    this.#check(`unfinalize ${ref.name}`);
    return null;
  };

  #check(call: string): void {
    this.calls.push(call);
    if ([...this.fail].some((f) => call.startsWith(f))) throw Object.assign(new Error(`${call} refused`), { status: 500 });
  }

  #answer(call: string, spec: Parameters<AssignedIdentityWriter['create']>[0]): AzureAssignedIdentity {
    this.#check(call);
    const wire = assignedIdentityWire(spec, String(++this.#rv));
    return normalizeAssignedIdentity({ ...wire, metadata: { ...wire.metadata, uid: `uid-${spec.name}` } }).value!;
  }
}

/** VM/VMSS identities in memory; every PATCH waits until the test settles it (or fails it with a 429, Retry-After 7). */
class FakeArm implements ComputeIdentityPort {
  readonly applies: { target: ArmTarget; add: readonly string[]; remove: readonly string[]; settle: (status?: 'failed') => void }[] = [];
  readonly #ids = new Map<string, Set<string>>();
  seed(name: string, ids: readonly string[]): void {
    this.#ids.set(name, new Set(ids));
  }
  async get(target: ArmTarget): Promise<IdentityState> {
    const ids = this.#ids.get(target.name) ?? new Set<string>();
    return { type: ids.size > 0 ? 'UserAssigned' : 'None', userAssigned: new Map([...ids].map((id) => [id, { id }])) };
  }
  patch(target: ArmTarget, patch: IdentityPatch): Promise<void> {
    return new Promise((resolve, reject) => {
      this.applies.push({
        target,
        add: patch.adds,
        remove: patch.removes,
        settle: (status) => {
          if (status === 'failed') {
            reject(Object.assign(new Error('slow down'), { statusCode: 429, response: { headers: { get: (h: string) => (h === 'retry-after' ? '7' : undefined) } } }));
            return;
          }
          const ids = this.#ids.get(target.name) ?? new Set<string>();
          for (const id of patch.adds) ids.add(id);
          for (const id of patch.removes) ids.delete(id);
          this.#ids.set(target.name, ids);
          resolve();
        },
      });
    });
  }
}

class RecordingEvents implements EventSink {
  readonly seen: string[] = [];
  normal(s: EventSubject, reason: string): void {
    this.seen.push(`Normal ${s.kind}/${s.name} ${reason}`);
  }
  warning(s: EventSubject, reason: string): void {
    this.seen.push(`Warning ${s.kind}/${s.name} ${reason}`);
  }
}

function setup() {
  const writer = new FakeWriter();
  const arm = new FakeArm();
  const events = new RecordingEvents();
  const requeues: number[] = [];
  const written = new Map<string, AzureAssignedIdentity | null>();
  // Holds are waited out on a clock the test does not move; long Retry-After holds the target at once.
  const workers = new ArmWorkers({ port: arm, logger: log, clock: new ManualClock(1_000_000), maxThrottleWaitMs: 0, retryBaseMs: 100 });
  const executor = new Executor({
    writer,
    arm: workers,
    events,
    metrics: createMicMetrics(),
    log,
    createDeleteBatch: 4,
    onWritten: (key, obj) => written.set(key, obj),
    retryBaseMs: 100,
  });
  const targetOf = (n: string): string => (n === 'vm1' ? 'vm/vm1' : 'vmss/ss1');
  const ctx = (assigned: readonly AzureAssignedIdentity[] = []): ExecutionContext => ({
    signal: new AbortController().signal,
    assigned: new Map(assigned.map((a) => [`${a.namespace}/${a.name}`, a])),
    targetOfNode: targetOf,
  });
  // The controller's part: the cache with our own writes on top, what the workers know ARM holds, a cycle per settle.
  let latest: ClusterSnapshot | undefined;
  type CycleOutcome = ExecutionOutcome & { readonly errors: readonly unknown[] };
  const cycles = new Set<Promise<CycleOutcome>>();
  const cycle = (s: ClusterSnapshot): Promise<CycleOutcome> => {
    latest = s;
    const assigned = new Map(s.assigned.map((a) => [`${a.namespace}/${a.name}`, a]));
    for (const [k, obj] of written) {
      if (obj === null) assigned.delete(k);
      else assigned.set(k, obj);
    }
    const attachments = new Map(s.attachments);
    for (const [k, v] of workers.attachments(['vmss/ss1', 'vm/vm1'])) attachments.set(k, v);
    const o = executor.apply(run({ ...s, assigned: [...assigned.values()], attachments }), ctx([...assigned.values()]));
    if (o.requeueAfterMs !== undefined) requeues.push(o.requeueAfterMs);
    // The controller's queue runs each named key.
    const p = Promise.allSettled(o.keys.map((k) => executor.runKey(k))).then((results) => ({
      ...o,
      errors: results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : [])),
    }));
    cycles.add(p);
    void p.finally(() => cycles.delete(p));
    return p;
  };
  workers.onSettled(() => {
    if (latest !== undefined) void cycle(latest);
  });
  const idle = async (): Promise<void> => {
    for (let quiet = 0; quiet < 3; ) {
      await workers.idle();
      await Promise.all([...cycles]);
      await new Promise((r) => setImmediate(r));
      quiet = cycles.size === 0 ? quiet + 1 : 0;
    }
  };
  return { writer, arm, events, requeues, written, executor, workers, ctx, cycle, idle };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

const id1 = identity('default', 'id1');
const id2 = identity('default', 'id2');
const b1 = binding('default', 'b1', 'id1', 'app1');
const b2 = binding('default', 'b2', 'id2', 'app2');
const nodes = [vmssNode('ss1-0', 'ss1'), vmNode('vm1')];

describe('Executor', () => {
  it('creates AAIs at once while ARM is busy, and marks them Assigned only after the attach', async () => {
    const { writer, arm, cycle, idle, events } = setup();
    void cycle(snapshot({ pods: [pod('default', 'p1', 'app1', 'ss1-0')], nodes, identities: [id1], bindings: [b1] }));
    await tick();
    expect(writer.calls).toEqual(['create p1-default-id1']);
    expect(arm.applies.map((a) => [a.target.name, a.add])).toEqual([['ss1', [cid('id1')]]]);

    arm.applies[0]!.settle();
    await idle();
    expect(writer.calls).toEqual(['create p1-default-id1', 'status p1-default-id1 Assigned']);
    expect(events.seen).toEqual(['Normal AzureIdentityBinding/b1 binding applied']);
  });

  it('does not let a slow VMSS delay a pod on a VM', async () => {
    const { writer, arm, cycle, idle } = setup();
    void cycle(
      snapshot({
        pods: [pod('default', 'p1', 'app1', 'ss1-0'), pod('default', 'p2', 'app2', 'vm1')],
        nodes,
        identities: [id1, id2],
        bindings: [b1, b2],
      }),
    );
    await tick();
    arm.applies.find((a) => a.target.kind === 'vm')!.settle(); // the VMSS stays pending
    await tick();
    expect(writer.calls).toContain('status p2-default-id2 Assigned');
    expect(writer.calls).not.toContain('status p1-default-id1 Assigned');
    arm.applies.find((a) => a.target.kind === 'vmss')!.settle();
    await idle();
  });

  it('asks ARM once for an identity already in flight, and chains the later AAI on the same outcome', async () => {
    const { arm, writer, cycle, idle, workers } = setup();
    const s1 = snapshot({ pods: [pod('default', 'p1', 'app1', 'ss1-0')], nodes, identities: [id1], bindings: [b1] });
    void cycle(s1);
    await tick();
    // A second pod on the same VMSS needs the same identity while the first attach is still running.
    const s2 = snapshot({ ...s1, pods: [...s1.pods, pod('default', 'p2', 'app1', 'ss1-0')], assigned: [aai(s1.pods[0]!, b1, id1, 'Created')] });
    const stats = await cycle(s2);
    expect(stats.armCalls).toBe(0);
    expect(stats.deferred).toBe(2); // both statuses wait for the attach already in flight
    expect(workers.attachments(['vmss/ss1']).get('vmss/ss1')).toBeUndefined();
    arm.applies[0]!.settle();
    await idle();
    expect(arm.applies).toHaveLength(1);
    expect(writer.calls.filter((c) => c.startsWith('status')).sort()).toEqual([
      'status p1-default-id1 Assigned',
      'status p2-default-id1 Assigned',
    ]);
  });

  it('keeps the AAI Created, holds the target and asks for a cycle after Retry-After when ARM fails', async () => {
    const { arm, writer, executor, ctx, cycle, idle, requeues, events } = setup();
    const s = snapshot({ pods: [pod('default', 'p1', 'app1', 'ss1-0')], nodes, identities: [id1], bindings: [b1] });
    void cycle(s);
    await tick();
    arm.applies[0]!.settle('failed');
    await idle();
    expect(writer.calls).toEqual(['create p1-default-id1']);
    expect(requeues).toContain(7000);
    expect(events.seen).toContain('Warning AzureIdentityBinding/b1 binding apply error');
    // While held, a new plan for that target makes no ARM call.
    const again = executor.apply(run(snapshot({ ...s, assigned: [aai(s.pods[0]!, b1, id1, 'Created')] })), ctx([aai(s.pods[0]!, b1, id1, 'Created')]));
    expect(again.armCalls).toBe(0);
    expect(again.heldTargets).toBe(1);
  });

  it('detaches first, then marks Unassigned, deletes and removes the finalizer', async () => {
    const { arm, writer, cycle, idle, workers } = setup();
    arm.seed('ss1', [cid('id1')]);
    const p1 = pod('default', 'p1', 'app1', 'ss1-0');
    const current = aai(p1, b1, id1, 'Assigned');
    const s = snapshot({ pods: [], nodes, identities: [id1], bindings: [b1], assigned: [current], attachments: new Map([['vmss/ss1', attached([cid('id1')])]]) });
    void cycle(s);
    await tick();
    expect(writer.calls).toEqual([]); // waiting for the detach
    expect(arm.applies.map((a) => a.remove)).toEqual([[cid('id1')]]);
    expect(workers.attachments(['vmss/ss1']).get('vmss/ss1')).toBeUndefined(); // not known yet
    arm.applies[0]!.settle();
    await idle();
    expect(writer.calls).toEqual(['status p1-default-id1 Unassigned', 'delete p1-default-id1', 'unfinalize p1-default-id1']);
  });

  it('backs off a key whose write fails and asks for a later cycle', async () => {
    const { writer, cycle, idle, events } = setup();
    writer.fail.add('create');
    const s = snapshot({ pods: [pod('default', 'p1', 'app1', 'vm1')], nodes, identities: [identity('default', 'sp', { type: 1 })], bindings: [binding('default', 'b1', 'sp', 'app1')] });
    const outcome = await cycle(s);
    await idle();
    // The cycle fails, so the work queue retries it with its backoff (the executor keeps no retry of its own).
    expect(outcome.errors).toHaveLength(1);
    expect(events.seen).toEqual(['Warning AzureIdentityBinding/b1 binding apply error']);
  });
});

describe('kubeEventSink', () => {
  it('lets 25 events per object through, then one more only after the bucket refills', async () => {
    let now = 0;
    const sent: string[] = [];
    const recorder = { event: async (o: { name: string }, _t: string, reason: string) => void sent.push(`${o.name} ${reason}`) } as unknown as EventRecorder;
    const sink = kubeEventSink(recorder, { log, now: () => now });
    const b = { apiVersion: 'v1', kind: 'AzureIdentityBinding', namespace: 'default', name: 'b1', uid: 'u1' };
    for (let i = 0; i < 40; i++) sink.normal(b, 'binding applied', `pod ${i}`);
    sink.normal({ ...b, name: 'b2', uid: 'u2' }, 'binding applied', 'other object');
    expect(sent.filter((s) => s.startsWith('b1'))).toHaveLength(25);
    expect(sent).toContain('b2 binding applied');
    now += 300_000;
    sink.normal(b, 'binding applied', 'later');
    sink.normal(b, 'binding applied', 'too soon');
    expect(sent.filter((s) => s.startsWith('b1'))).toHaveLength(26);
  });
});
