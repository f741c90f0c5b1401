// Property-style checks over random snapshots: a plan, applied in full, leaves nothing to do, never touches
// identities that are not ours to touch.
import { describe, expect, it } from 'vitest';
import {
  assignedKey,
  canonicalResourceId,
  computeDesired,
  isEmptyPlan,
  type Plan,
} from '../../src/mic/core/index.js';
import { apply, planFor, randomWorld, type World } from './mic-core.random.js';

/** Invariants every plan must keep, whatever the input. */
function checkSafety(w: World, p: Plan): void {
  const desired = computeDesired(w.snapshot, w.policy).assignments;
  const targetOf = new Map(w.snapshot.nodes.map((n) => [n.name, n.target?.key]));
  for (const op of p.targetOps) {
    expect(op.add.length + op.remove.length).toBeGreaterThan(0);
    for (const id of op.remove) {
      // Ours: some AAI on a node of this target carries it.
      const ours = w.snapshot.assigned.some(
        (a) => targetOf.get(a.nodeName) === op.target.key && a.identityRef !== null && canonicalResourceId(a.identityRef.resourceID) === id,
      );
      expect(ours, `removes ${id} from ${op.target.key} though no AAI of ours put it there`).toBe(true);
      expect(w.policy.immutableResourceIds.has(id)).toBe(false);
      const inUse = desired.some(
        (d) => d.identity.type === 0 && targetOf.get(d.nodeName) === op.target.key && canonicalResourceId(d.identity.resourceID) === id,
      );
      expect(inUse, `removes ${id} from ${op.target.key} while a desired assignment uses it`).toBe(false);
    }
  }
  for (const d of p.deleteAssigned) {
    if (d.afterTarget !== undefined) expect(p.targetOps.some((o) => o.target.key === d.afterTarget)).toBe(true);
  }
  const desiredByKey = new Map(desired.map((d) => [d.key, d]));
  for (const s of p.statusUpdates) {
    if (s.afterTarget !== undefined) expect(p.targetOps.some((o) => o.target.key === s.afterTarget)).toBe(true);
    const d = desiredByKey.get(s.key);
    expect(d, `status update for undesired ${s.key}`).toBeDefined();
    if (d?.identity.type === 0) expect(targetOf.get(d.nodeName), `promotes ${s.key} on a node without a VM`).toBeDefined();
  }
}

describe('MIC plan properties (random snapshots)', () => {
  it('is idempotent: applying a plan and planning again yields an empty plan', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const w = randomWorld(seed, false);
      const first = planFor(w);
      checkSafety(w, first);
      const second = planFor(apply(w, first));
      expect(isEmptyPlan(second), `seed ${seed}: ${JSON.stringify(second, null, 1)}`).toBe(true);
    }
  });

  it('converges with AAIs still being deleted, and the end state matches the desired state', () => {
    for (let seed = 1000; seed <= 1300; seed++) {
      let w = randomWorld(seed, true);
      let rounds = 0;
      for (let p = planFor(w); !isEmptyPlan(p); p = planFor(w)) {
        checkSafety(w, p);
        w = apply(w, p);
        rounds++;
        expect(rounds, `seed ${seed} does not converge`).toBeLessThanOrEqual(2);
      }
      // Now let a periodic ARM read refresh every target, as the reconcile does, and settle again.
      w = {
        ...w,
        snapshot: {
          ...w.snapshot,
          attachments: new Map([...w.truth].map(([k, t]) => [k, { ids: [...t.ids], systemAssigned: t.systemAssigned }])),
        },
      };
      const p = planFor(w);
      checkSafety(w, p);
      w = apply(w, p);
      expect(isEmptyPlan(planFor(w)), `seed ${seed}`).toBe(true);

      const desired = computeDesired(w.snapshot, w.policy).assignments;
      const nodes = new Map(w.snapshot.nodes.map((n) => [n.name, n]));
      const live = desired.filter((d) => nodes.has(d.nodeName));
      const aais = new Map(w.snapshot.assigned.map((a) => [assignedKey(a.namespace, a.name), a]));
      expect([...aais.keys()].sort(), `seed ${seed}`).toEqual(live.map((d) => d.key));
      for (const d of live) {
        const target = nodes.get(d.nodeName)?.target;
        const state = aais.get(d.key)?.state;
        // Nothing can confirm a user-assigned identity on a node without a VM; checkSafety forbids promoting it.
        if (d.identity.type === 0 && target === undefined) continue;
        expect(state === 'Assigned' || state === '', `seed ${seed}: ${d.key} is ${state}`).toBe(true);
        if (d.identity.type === 0 && target !== undefined) {
          expect(w.truth.get(target.key)?.ids.has(canonicalResourceId(d.identity.resourceID)), `seed ${seed}: ${d.key}`).toBe(true);
        }
      }
    }
  });
});
