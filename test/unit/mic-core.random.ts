// Random cluster snapshots and a flawless executor, for the MIC core property tests.
import type { AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, PodView } from '../../src/crds/types.js';
import {
  assignedKey,
  canonicalResourceId,
  computeDesired,
  plan,
  type ClusterSnapshot,
  type MicPolicy,
  type Plan,
  type SnapshotNode,
  type TargetAttachment,
} from '../../src/mic/core/index.js';
import { aai, assigned, binding, cid, clientId, identity, node, pod, policy, vmNode, vmssNode } from './mic-core.builders.js';

/** Small deterministic PRNG (mulberry32) so a failing seed can be replayed. */
export function rng(seed: number): { int(n: number): number; pick<T>(xs: readonly T[]): T; chance(p: number): boolean } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    int: (n) => Math.floor(next() * n),
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    chance: (p) => next() < p,
  };
}

/** The world as ARM really is, next to the snapshot the core sees. */
export interface World {
  snapshot: ClusterSnapshot;
  truth: Map<string, { ids: Set<string>; systemAssigned: boolean }>;
  policy: MicPolicy;
}

const NAMESPACES = ['alpha', 'beta', 'default'];
const SELECTORS = ['s1', 's2', 's3'];

export function randomWorld(seed: number, allowDeletingDesired: boolean): World {
  const r = rng(seed);
  const nodes: SnapshotNode[] = [
    vmNode('vm0'),
    vmNode('vm1'),
    vmssNode('ss-a-0', 'ss-a'),
    vmssNode('ss-a-1', 'ss-a'),
    vmssNode('ss-b-0', 'ss-b'),
    node('bare', undefined),
  ];
  const nodeNames = [...nodes.map((n) => n.name), 'vanished'];

  const identities: AzureIdentity[] = [];
  for (const ns of NAMESPACES) {
    for (const name of ['i1', 'i2', 'i3']) {
      if (r.chance(0.25)) continue;
      const kind = r.int(10);
      identities.push(
        identity(ns, name, {
          type: kind === 0 ? 1 : 0,
          // Shared resource IDs across namespaces exercise the in-use rule; some IDs are invalid.
          resourceID: kind === 1 ? 'not-an-arm-id' : kind === 0 ? '' : `${cid(name).toUpperCase()}`,
          rv: String(1 + r.int(2)),
          namespaced: r.chance(0.15),
        }),
      );
    }
  }
  const bindings: AzureIdentityBinding[] = [];
  for (const ns of NAMESPACES) {
    for (let i = 0; i < 3; i++) {
      if (r.chance(0.3)) continue;
      bindings.push(binding(ns, `b${i}`, r.pick(['i1', 'i2', 'i3', 'missing']), r.pick(SELECTORS), { rv: String(1 + r.int(2)) }));
    }
  }
  const pods: PodView[] = [];
  for (let i = 0; i < 12; i++) {
    if (r.chance(0.2)) continue;
    const phase = r.chance(0.1) ? 'Succeeded' : 'Running';
    const nodeName = r.chance(0.1) ? '' : r.pick(nodeNames);
    pods.push(pod(r.pick(NAMESPACES), `p${i}`, r.chance(0.1) ? undefined : r.pick(SELECTORS), nodeName, { phase, deleting: r.chance(0.05) }));
  }

  // Existing AAIs: some current, some stale (other binding/identity version or node), some for vanished pods.
  const assignedList: AzureAssignedIdentity[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < 10; i++) {
    const id = identities.length > 0 && r.chance(0.9) ? r.pick(identities) : identity('default', 'i9');
    const b = bindings.length > 0 ? r.pick(bindings) : binding('default', 'b9', 'i9', 's1');
    const p = r.chance(0.7) && pods.length > 0 ? r.pick(pods) : pod(r.pick(NAMESPACES), `gone${i}`, 's1', r.pick(nodeNames));
    const onNode = r.chance(0.8) ? p : pod(p.namespace, p.name, 's1', r.pick(nodeNames));
    const stale = r.chance(0.3) ? identity(id.namespace, id.name, { type: id.type ?? 0, rv: '0', resourceID: id.resourceID }) : id;
    const ns = id.namespaced ? id.namespace : 'default';
    const existing = aai(onNode, b, stale, r.pick(['Created', 'Assigned', 'Assigned', 'Unassigned', ''] as const), ns);
    const key = assignedKey(existing.namespace, existing.name);
    if (seen.has(key)) continue;
    seen.add(key);
    const deleting = r.chance(0.1);
    assignedList.push(deleting ? assigned({ ...toSpec(existing) }, existing.state, { deleting: true }) : existing);
  }

  // ARM truth: what the AAIs imply plus some pre-existing identities; known to the core for some targets only.
  const truth = new Map<string, { ids: Set<string>; systemAssigned: boolean }>();
  for (const key of ['vm/vm0', 'vm/vm1', 'vmss/ss-a', 'vmss/ss-b']) {
    const ids = new Set<string>();
    if (r.chance(0.5)) ids.add(cid('pre-existing'));
    truth.set(key, { ids, systemAssigned: r.chance(0.5) });
  }
  const nodeTarget = new Map(nodes.map((n) => [n.name, n.target?.key]));
  for (const a of assignedList) {
    const t = nodeTarget.get(a.nodeName);
    if (t !== undefined && a.identityRef?.type === 0 && (a.state === 'Assigned' || a.state === '' || r.chance(0.5))) {
      truth.get(t)?.ids.add(canonicalResourceId(a.identityRef.resourceID));
    }
  }
  const attachments = new Map<string, TargetAttachment | undefined>();
  for (const [key, t] of truth) if (r.chance(0.6)) attachments.set(key, { ids: [...t.ids], systemAssigned: t.systemAssigned });

  const immutable = r.chance(0.3) ? new Set([clientId('default/i2')]) : new Set<string>();
  const snap: ClusterSnapshot = {
    pods,
    nodes,
    identities,
    bindings,
    assigned: allowDeletingDesired ? assignedList : assignedList.filter((a) => !a.deleting),
    attachments,
    pending: { created: new Set(), deleted: new Set() },
  };
  return {
    snapshot: snap,
    truth,
    policy: policy({ forceNamespaced: r.chance(0.15), immutableClientIds: immutable, immutableResourceIds: new Set([cid('pre-existing')]) }),
  };
}

function toSpec(a: AzureAssignedIdentity): Parameters<typeof assigned>[0] {
  if (a.identityRef === null || a.bindingRef === null) throw new Error('test AAIs always carry refs');
  return {
    key: assignedKey(a.namespace, a.name),
    namespace: a.namespace,
    name: a.name,
    identityRef: a.identityRef,
    bindingRef: a.bindingRef,
    pod: a.pod,
    podNamespace: a.podNamespace,
    nodeName: a.nodeName,
    labels: a.labels,
    finalizers: a.finalizers,
    state: 'Created',
  };
}

export function planFor(w: World): Plan {
  return plan(w.snapshot, computeDesired(w.snapshot, w.policy), w.policy);
}

/** Applies every step of a plan as a flawless executor would, and lets the cache catch up. */
export function apply(w: World, p: Plan): World {
  const byKey = new Map(w.snapshot.assigned.map((a) => [assignedKey(a.namespace, a.name), a]));
  let rv = 100;
  for (const c of p.createAssigned) byKey.set(c.key, assigned(c, 'Created', { rv: String(rv++) }));
  for (const u of p.updateAssigned) byKey.set(u.after.key, assigned(u.after, u.after.state, { rv: String(rv++) }));
  const truth = new Map([...w.truth].map(([k, v]) => [k, { ids: new Set(v.ids), systemAssigned: v.systemAssigned }]));
  const attachments = new Map(w.snapshot.attachments);
  for (const op of p.targetOps) {
    const t = truth.get(op.target.key);
    if (t === undefined) throw new Error(`op on unknown target ${op.target.key}`);
    for (const id of op.add) t.ids.add(id);
    for (const id of op.remove) t.ids.delete(id);
    attachments.set(op.target.key, { ids: [...t.ids], systemAssigned: t.systemAssigned });
  }
  for (const s of p.statusUpdates) {
    const a = byKey.get(s.key);
    if (a === undefined) throw new Error(`status update for missing ${s.key}`);
    byKey.set(s.key, { ...a, state: s.to, resourceVersion: String(rv++) });
  }
  for (const d of p.deleteAssigned) byKey.delete(d.key);
  return { ...w, truth, snapshot: { ...w.snapshot, assigned: [...byKey.values()], attachments } };
}

