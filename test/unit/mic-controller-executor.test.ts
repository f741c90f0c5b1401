// The executor with in-memory ports: Kubernetes writes never wait behind ARM, only the steps that depend on an
// ARM outcome do; an identity change in flight is not asked for twice; failures hold the target and ask for a
// later cycle; the spam filter bounds events per object.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ASSIGNED_IDENTITY_FINALIZER } from '../../src/crds/names.js';
import { normalizeAssignedIdentity } from '../../src/crds/normalize.js';
import type { AzureAssignedIdentity } from '../../src/crds/types.js';
import { kubeEventSink } from '../../src/mic/adapters/events.js';
import { assignedIdentityWire } from '../../src/mic/adapters/kube-assigned.js';
import type { ApplyResult, ArmTarget, IdentityOutcome } from '../../src/mic/arm.js';
import type { Plan } from '../../src/mic/core/index.js';
import { Executor, type ExecutionContext } from '../../src/mic/executor.js';
import { createMicMetrics } from '../../src/mic/metrics.js';
import type { ArmPort, AssignedIdentityWriter, EventSink, EventSubject } from '../../src/mic/ports.js';
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

/** ARM whose every apply waits until the test settles it. */
class FakeArm implements ArmPort {
  readonly applies: { target: ArmTarget; add: readonly string[]; remove: readonly string[]; settle: (status?: 'failed') => void }[] = [];
  async getIdentities(): Promise<{ ids: string[]; systemAssigned: boolean }> {
    return { ids: [], systemAssigned: false };
  }
  apply(target: ArmTarget, changes: { add?: readonly string[]; remove?: readonly string[] }): Promise<ApplyResult> {
    const add = changes.add ?? [];
    const remove = changes.remove ?? [];
    return new Promise((resolve) => {
      this.applies.push({
        target,
        add,
        remove,
        settle: (status) => {
          const outcome = (id: string, op: 'add' | 'remove'): IdentityOutcome =>
            status === 'failed'
              ? { id, key: id, op, status: 'failed', reason: 'throttled', message: 'slow down', retryAfterMs: 7000 }
              : { id, key: id, op, status: op === 'add' ? 'attached' : 'detached' };
          const outcomes = [...remove.map((id) => outcome(id, 'remove')), ...add.map((id) => outcome(id, 'add'))];
          resolve({ target, outcomes, patchCount: 1, ok: status !== 'failed' });
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
  const executor = new Executor({
    writer,
    arm,
    events,
    metrics: createMicMetrics(),
    log,
    createDeleteBatch: 4,
    onWritten: (key, obj) => written.set(key, obj),
    requeue: (ms) => requeues.push(ms),
    retryBaseMs: 100,
  });
  const ctx = (assigned: readonly AzureAssignedIdentity[] = []): ExecutionContext => ({
    signal: new AbortController().signal,
    assigned: new Map(assigned.map((a) => [`${a.namespace}/${a.name}`, a])),
    armTargets: new Map<string, ArmTarget>([
      ['vmss/ss1', { kind: 'vmss', name: 'ss1' }],
      ['vm/vm1', { kind: 'vm', name: 'vm1' }],
    ]),
    targetOfNode: (n) => (n === 'vm1' ? 'vm/vm1' : 'vmss/ss1'),
  });
  return { writer, arm, events, requeues, written, executor, ctx };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

const id1 = identity('default', 'id1');
const id2 = identity('default', 'id2');
const b1 = binding('default', 'b1', 'id1', 'app1');
const b2 = binding('default', 'b2', 'id2', 'app2');
const nodes = [vmssNode('ss1-0', 'ss1'), vmNode('vm1')];

describe('Executor', () => {
  it('creates AAIs at once while ARM is busy, and marks them Assigned only after the attach', async () => {
    const { writer, arm, executor, ctx, events } = setup();
    const plan = run(snapshot({ pods: [pod('default', 'p1', 'app1', 'ss1-0')], nodes, identities: [id1], bindings: [b1] }));
    executor.apply(plan, ctx());
    await tick();
    expect(writer.calls).toEqual(['create p1-default-id1']);
    expect(arm.applies.map((a) => [a.target.name, a.add])).toEqual([['ss1', [cid('id1')]]]);

    arm.applies[0]!.settle();
    await executor.idle();
    expect(writer.calls).toEqual(['create p1-default-id1', 'status p1-default-id1 Assigned']);
    expect(events.seen).toEqual(['Normal AzureIdentityBinding/b1 binding applied']);
  });

  it('does not let a slow VMSS delay a pod on a VM', async () => {
    const { writer, arm, executor, ctx } = setup();
    const plan = run(
      snapshot({
        pods: [pod('default', 'p1', 'app1', 'ss1-0'), pod('default', 'p2', 'app2', 'vm1')],
        nodes,
        identities: [id1, id2],
        bindings: [b1, b2],
      }),
    );
    executor.apply(plan, ctx());
    await tick();
    arm.applies.find((a) => a.target.kind === 'vm')!.settle(); // the VMSS stays pending
    await tick();
    expect(writer.calls).toContain('status p2-default-id2 Assigned');
    expect(writer.calls).not.toContain('status p1-default-id1 Assigned');
    arm.applies.find((a) => a.target.kind === 'vmss')!.settle();
    await executor.idle();
  });

  it('asks ARM once for an identity already in flight, and chains the later AAI on the same outcome', async () => {
    const { arm, writer, executor, ctx } = setup();
    const s1 = snapshot({ pods: [pod('default', 'p1', 'app1', 'ss1-0')], nodes, identities: [id1], bindings: [b1] });
    executor.apply(run(s1), ctx());
    await tick();
    // A second pod on the same VMSS needs the same identity while the first attach is still running.
    const s2 = snapshot({ ...s1, pods: [...s1.pods, pod('default', 'p2', 'app1', 'ss1-0')], assigned: [aai(s1.pods[0]!, b1, id1, 'Created')] });
    const stats = executor.apply(run(s2), ctx(s2.assigned));
    expect(stats.armCalls).toBe(0);
    expect(stats.busySkipped).toBe(1); // p1's key: same intent, already being carried out
    arm.applies[0]!.settle();
    await executor.idle();
    expect(arm.applies).toHaveLength(1);
    expect(writer.calls.filter((c) => c.startsWith('status')).sort()).toEqual([
      'status p1-default-id1 Assigned',
      'status p2-default-id1 Assigned',
    ]);
  });

  it('keeps the AAI Created, holds the target and asks for a cycle after Retry-After when ARM fails', async () => {
    const { arm, writer, executor, ctx, requeues, events } = setup();
    const s = snapshot({ pods: [pod('default', 'p1', 'app1', 'ss1-0')], nodes, identities: [id1], bindings: [b1] });
    executor.apply(run(s), ctx());
    await tick();
    arm.applies[0]!.settle('failed');
    await executor.idle();
    expect(writer.calls).toEqual(['create p1-default-id1']);
    expect(requeues).toContain(7000);
    expect(events.seen).toContain('Warning AzureIdentityBinding/b1 binding apply error');
    // While held, a new plan for that target makes no ARM call.
    const again = executor.apply(run(snapshot({ ...s, assigned: [aai(s.pods[0]!, b1, id1, 'Created')] })), ctx([aai(s.pods[0]!, b1, id1, 'Created')]));
    expect(again.armCalls).toBe(0);
    expect(again.heldTargets).toBe(1);
  });

  it('detaches first, then marks Unassigned, deletes and removes the finalizer', async () => {
    const { arm, writer, executor, ctx } = setup();
    const p1 = pod('default', 'p1', 'app1', 'ss1-0');
    const current = aai(p1, b1, id1, 'Assigned');
    const s = snapshot({ pods: [], nodes, identities: [id1], bindings: [b1], assigned: [current], attachments: new Map([['vmss/ss1', attached([cid('id1')])]]) });
    executor.apply(run(s), ctx([current]));
    await tick();
    expect(writer.calls).toEqual([]); // waiting for the detach
    expect(arm.applies.map((a) => a.remove)).toEqual([[cid('id1')]]);
    expect(executor.attachments(['vmss/ss1']).get('vmss/ss1')).toBeUndefined(); // not known yet
    arm.applies[0]!.settle();
    await executor.idle();
    expect(writer.calls).toEqual(['status p1-default-id1 Unassigned', 'delete p1-default-id1', 'unfinalize p1-default-id1']);
  });

  it('backs off a key whose write fails and asks for a later cycle', async () => {
    const { writer, executor, ctx, requeues, events } = setup();
    writer.fail.add('create');
    const s = snapshot({ pods: [pod('default', 'p1', 'app1', 'vm1')], nodes, identities: [identity('default', 'sp', { type: 1 })], bindings: [binding('default', 'b1', 'sp', 'app1')] });
    executor.apply(run(s), ctx());
    await executor.idle();
    expect(requeues).toEqual([100]);
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
