import { describe, expect, it } from 'vitest';
import { ASSIGNED_IDENTITY_FINALIZER } from '../../src/crds/names.js';
import { isEmptyPlan, skip } from '../../src/mic/core/index.js';
import {
  aai,
  assigned,
  attached,
  binding,
  cid,
  clientId,
  expectedSpec,
  identity,
  node,
  planOf,
  pod,
  policy,
  rid,
  run,
  snapshot,
  vmNode,
  vmssNode,
  vmssTarget,
  vmTarget,
} from './mic-core.builders.js';

const idA = identity('default', 'id-a');
const bindA = binding('default', 'bind-a', 'id-a', 'sel-a');
const idB = identity('default', 'id-b');
const bindB = binding('default', 'bind-b', 'id-b', 'sel-b');

describe('MIC plan: add flows', () => {
  it('creates a Created AAI, adds the identity to the VM, and marks it Assigned after the PATCH', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const s = snapshot({ pods: [p], nodes: [vmNode('vm0')], identities: [idA], bindings: [bindA] });
    const spec = expectedSpec(p, bindA, idA);
    expect(run(s)).toEqual(
      planOf({
        createAssigned: [spec],
        statusUpdates: [
          { key: spec.key, namespace: 'default', name: 'web-default-id-a', from: 'Created', to: 'Assigned', afterTarget: 'vm/vm0' },
        ],
        targetOps: [{ target: vmTarget('vm0'), add: [cid('id-a')], remove: [] }],
      }),
    );
  });

  it('on a VMSS where ARM already shows the identity, creates the AAI and marks it Assigned with no ARM call', () => {
    const p = pod('default', 'web', 'sel-a', 'ss-0');
    const s = snapshot({
      pods: [p],
      nodes: [vmssNode('ss-0', 'ss'), vmssNode('ss-1', 'ss')],
      identities: [idA],
      bindings: [bindA],
      attachments: new Map([['vmss/ss', attached([cid('id-a')])]]),
    });
    const spec = expectedSpec(p, bindA, idA);
    expect(run(s)).toEqual(
      planOf({
        createAssigned: [spec],
        statusUpdates: [{ key: spec.key, namespace: 'default', name: spec.name, from: 'Created', to: 'Assigned', afterTarget: undefined }],
      }),
    );
  });

  it('consolidates pods on several nodes of one VMSS into one op with each identity once', () => {
    const p0 = pod('default', 'a0', 'sel-a', 'ss-0');
    const p1 = pod('default', 'a1', 'sel-a', 'ss-1');
    const p2 = pod('default', 'b0', 'sel-b', 'ss-1');
    const s = snapshot({
      pods: [p2, p1, p0],
      nodes: [vmssNode('ss-0', 'ss'), vmssNode('ss-1', 'ss')],
      identities: [idB, idA],
      bindings: [bindB, bindA],
    });
    const plan = run(s);
    expect(plan.targetOps).toEqual([{ target: vmssTarget('ss'), add: [cid('id-a'), cid('id-b')], remove: [] }]);
    expect(plan.createAssigned.map((c) => c.key)).toEqual([
      'default/a0-default-id-a',
      'default/a1-default-id-a',
      'default/b0-default-id-b',
    ]);
    expect(plan.statusUpdates.every((u) => u.afterTarget === 'vmss/ss')).toBe(true);
  });

  it('retries a Created AAI: adds again when ARM state is unknown, confirms at once when ARM shows it', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const existing = aai(p, bindA, idA, 'Created');
    const base = { pods: [p], nodes: [vmNode('vm0')], identities: [idA], bindings: [bindA], assigned: [existing] };
    const status = { key: 'default/web-default-id-a', namespace: 'default', name: 'web-default-id-a', from: 'Created' as const, to: 'Assigned' as const };
    expect(run(snapshot(base))).toEqual(
      planOf({
        statusUpdates: [{ ...status, afterTarget: 'vm/vm0' }],
        targetOps: [{ target: vmTarget('vm0'), add: [cid('id-a')], remove: [] }],
      }),
    );
    const known = snapshot({ ...base, attachments: new Map([['vm/vm0', attached([cid('id-a')])]]) });
    expect(run(known)).toEqual(planOf({ statusUpdates: [{ ...status, afterTarget: undefined }] }));
  });

  it('gives a pod every binding sharing its selector, sorted by binding namespace/name', () => {
    const bindA2 = binding('default', 'bind-a2', 'id-b', 'sel-a');
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const s = snapshot({ pods: [p], nodes: [vmNode('vm0')], identities: [idA, idB], bindings: [bindA2, bindA] });
    const plan = run(s);
    expect(plan.createAssigned).toEqual([expectedSpec(p, bindA, idA), expectedSpec(p, bindA2, idB)]);
    expect(plan.targetOps).toEqual([{ target: vmTarget('vm0'), add: [cid('id-a'), cid('id-b')], remove: [] }]);
  });

  it('gives service-principal identities an AAI that goes Assigned at once, with no ARM op', () => {
    const sp = identity('default', 'sp', { type: 1 });
    const bindSp = binding('default', 'bind-sp', 'sp', 'sel-sp');
    const p = pod('default', 'web', 'sel-sp', 'vm0');
    const s = snapshot({ pods: [p], nodes: [vmNode('vm0')], identities: [sp], bindings: [bindSp] });
    const spec = expectedSpec(p, bindSp, sp);
    expect(run(s)).toEqual(
      planOf({
        createAssigned: [spec],
        statusUpdates: [{ key: spec.key, namespace: 'default', name: spec.name, from: 'Created', to: 'Assigned', afterTarget: undefined }],
      }),
    );
  });

  it('deletes a service-principal AAI without touching ARM', () => {
    const sp = identity('default', 'sp', { type: 2 });
    const bindSp = binding('default', 'bind-sp', 'sp', 'sel-sp');
    const gone = pod('default', 'web', 'sel-sp', 'vm0');
    const s = snapshot({ nodes: [vmNode('vm0')], identities: [sp], bindings: [bindSp], assigned: [aai(gone, bindSp, sp)] });
    expect(run(s)).toEqual(
      planOf({
        deleteAssigned: [
          { key: 'default/web-default-sp', namespace: 'default', name: 'web-default-sp', resourceVersion: '7', cause: 'NotDesired', markUnassigned: true, afterTarget: undefined },
        ],
      }),
    );
  });
});

describe('MIC plan: delete flows and the in-use rule', () => {
  it('removes the identity from the VM, then marks the AAI Unassigned and deletes it, when its pod is deleted', () => {
    const gone = pod('default', 'web', 'sel-a', 'vm0');
    const s = snapshot({ nodes: [vmNode('vm0')], identities: [idA], bindings: [bindA], assigned: [aai(gone, bindA, idA)] });
    expect(run(s)).toEqual(
      planOf({
        deleteAssigned: [
          { key: 'default/web-default-id-a', namespace: 'default', name: 'web-default-id-a', resourceVersion: '7', cause: 'NotDesired', markUnassigned: true, afterTarget: 'vm/vm0' },
        ],
        targetOps: [{ target: vmTarget('vm0'), add: [], remove: [cid('id-a')] }],
      }),
    );
  });

  it('keeps a shared identity on a VMSS until the last pod using it (on another node) goes', () => {
    const p0 = pod('default', 'a0', 'sel-a', 'ss-0');
    const p1 = pod('default', 'a1', 'sel-a', 'ss-1');
    const nodes = [vmssNode('ss-0', 'ss'), vmssNode('ss-1', 'ss')];
    const aais = [aai(p0, bindA, idA), aai(p1, bindA, idA)];
    const attachments = new Map([['vmss/ss', attached([cid('id-a')])]]);
    const firstGone = snapshot({ pods: [p1], nodes, identities: [idA], bindings: [bindA], assigned: aais, attachments });
    expect(run(firstGone)).toEqual(
      planOf({
        deleteAssigned: [
          { key: 'default/a0-default-id-a', namespace: 'default', name: 'a0-default-id-a', resourceVersion: '7', cause: 'NotDesired', markUnassigned: true, afterTarget: undefined },
        ],
      }),
    );
    const lastGone = snapshot({ nodes, identities: [idA], bindings: [bindA], assigned: [aais[1]], attachments });
    expect(run(lastGone)).toEqual(
      planOf({
        deleteAssigned: [
          { key: 'default/a1-default-id-a', namespace: 'default', name: 'a1-default-id-a', resourceVersion: '7', cause: 'NotDesired', markUnassigned: true, afterTarget: 'vmss/ss' },
        ],
        targetOps: [{ target: vmssTarget('ss'), add: [], remove: [cid('id-a')] }],
      }),
    );
  });

  it('removes only our identity: a pre-existing user-assigned one and the system-assigned one stay', () => {
    const gone = pod('default', 'web', 'sel-a', 'vm0');
    const s = snapshot({
      nodes: [vmNode('vm0')],
      identities: [idA],
      bindings: [bindA],
      assigned: [aai(gone, bindA, idA)],
      attachments: new Map([['vm/vm0', attached([cid('pre-existing'), cid('id-a')], true)]]),
    });
    expect(run(s).targetOps).toEqual([{ target: vmTarget('vm0'), add: [], remove: [cid('id-a')] }]);
    // With nothing of ours on the VM there is nothing to do at all.
    expect(isEmptyPlan(run(snapshot({ ...s, assigned: [] })))).toBe(true);
  });

  it('never removes an immutable identity (by client ID or resource ID, any case) but still deletes its AAI', () => {
    const gone = pod('default', 'web', 'sel-a', 'ss-0');
    const s = snapshot({
      nodes: [vmssNode('ss-0', 'ss')],
      identities: [idA],
      bindings: [bindA],
      assigned: [aai(gone, bindA, idA)],
    });
    const deleted = planOf({
      deleteAssigned: [
        { key: 'default/web-default-id-a', namespace: 'default', name: 'web-default-id-a', resourceVersion: '7', cause: 'NotDesired', markUnassigned: true, afterTarget: undefined },
      ],
    });
    expect(run(s, policy({ immutableClientIds: new Set([clientId('default/id-a').toLowerCase()]) }))).toEqual(deleted);
    expect(run(s, policy({ immutableResourceIds: new Set([cid('id-a')]) }))).toEqual(deleted);
  });

  it('compares immutable client IDs case-insensitively', () => {
    const upper = identity('default', 'id-a', { clientID: 'ABCDEF01-2222-3333-4444-555555555555' });
    const gone = pod('default', 'web', 'sel-a', 'vm0');
    const s = snapshot({ nodes: [vmNode('vm0')], identities: [upper], bindings: [bindA], assigned: [aai(gone, bindA, upper)] });
    const pol = policy({ immutableClientIds: new Set(['abcdef01-2222-3333-4444-555555555555']) });
    expect(run(s, pol).targetOps).toEqual([]);
  });

  it('deletes an AAI whose node vanished without any ARM op or Unassigned patch', () => {
    const p = pod('default', 'web', 'sel-a', 'gone-node');
    const s = snapshot({ pods: [p], nodes: [vmNode('vm0')], identities: [idA], bindings: [bindA], assigned: [aai(p, bindA, idA)] });
    expect(run(s)).toEqual(
      planOf({
        deleteAssigned: [
          { key: 'default/web-default-id-a', namespace: 'default', name: 'web-default-id-a', resourceVersion: '7', cause: 'NodeGone', markUnassigned: false, afterTarget: undefined },
        ],
        skipped: [skip('Pod', 'default', 'web', 'NodeNotFound', 'node gone-node is not known; no identity is assigned there')],
      }),
    );
  });

  it('releases identities of finished and deleting pods', () => {
    const done = pod('default', 'done', 'sel-a', 'vm0', { phase: 'Succeeded' });
    const failed = pod('default', 'failed', 'sel-a', 'vm0', { phase: 'Failed' });
    const leaving = pod('default', 'leaving', 'sel-a', 'vm0', { deleting: true });
    const s = snapshot({
      pods: [done, failed, leaving],
      nodes: [vmNode('vm0')],
      identities: [idA],
      bindings: [bindA],
      assigned: [aai(done, bindA, idA), aai(failed, bindA, idA), aai(leaving, bindA, idA)],
    });
    const plan = run(s);
    expect(plan.deleteAssigned.map((d) => [d.name, d.afterTarget])).toEqual([
      ['done-default-id-a', 'vm/vm0'],
      ['failed-default-id-a', 'vm/vm0'],
      ['leaving-default-id-a', 'vm/vm0'],
    ]);
    expect(plan.targetOps).toEqual([{ target: vmTarget('vm0'), add: [], remove: [cid('id-a')] }]);
    expect(plan.skipped.map((k) => [k.subject.name, k.code])).toEqual([
      ['done', 'PodFinished'],
      ['failed', 'PodFinished'],
      ['leaving', 'PodDeleting'],
    ]);
  });
});

describe('MIC plan: updates', () => {
  it('moves to the new identity when a pod label changes: create the new AAI, delete the old, swap on the VM', () => {
    const before = pod('default', 'web', 'sel-a', 'vm0');
    const after = pod('default', 'web', 'sel-b', 'vm0');
    const s = snapshot({
      pods: [after],
      nodes: [vmNode('vm0')],
      identities: [idA, idB],
      bindings: [bindA, bindB],
      assigned: [aai(before, bindA, idA)],
      attachments: new Map([['vm/vm0', attached([cid('id-a')])]]),
    });
    const spec = expectedSpec(after, bindB, idB);
    expect(run(s)).toEqual(
      planOf({
        createAssigned: [spec],
        deleteAssigned: [
          { key: 'default/web-default-id-a', namespace: 'default', name: 'web-default-id-a', resourceVersion: '7', cause: 'NotDesired', markUnassigned: true, afterTarget: 'vm/vm0' },
        ],
        statusUpdates: [{ key: spec.key, namespace: 'default', name: spec.name, from: 'Created', to: 'Assigned', afterTarget: 'vm/vm0' }],
        targetOps: [{ target: vmTarget('vm0'), add: [cid('id-b')], remove: [cid('id-a')] }],
      }),
    );
  });

  it('updates the AAI in place when the identity is edited to another resource ID, swapping IDs in one op', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const edited = identity('default', 'id-a', { rv: '2', resourceID: rid('id-a-new') });
    const s = snapshot({
      pods: [p],
      nodes: [vmNode('vm0')],
      identities: [edited],
      bindings: [bindA],
      assigned: [aai(p, bindA, idA)],
    });
    const spec = expectedSpec(p, bindA, edited);
    expect(run(s)).toEqual(
      planOf({
        updateAssigned: [
          { before: { key: spec.key, namespace: 'default', name: spec.name, resourceVersion: '7' }, after: spec, afterTarget: 'vm/vm0' },
        ],
        statusUpdates: [{ key: spec.key, namespace: 'default', name: spec.name, from: 'Created', to: 'Assigned', afterTarget: 'vm/vm0' }],
        targetOps: [{ target: vmTarget('vm0'), add: [cid('id-a-new')], remove: [cid('id-a')] }],
      }),
    );
  });

  it('keeps the AAI Assigned and touches no ARM when an edit leaves the resource ID unchanged', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const relabelled = binding('default', 'bind-a', 'id-a', 'sel-a', { rv: '5' });
    const s = snapshot({ pods: [p], nodes: [vmNode('vm0')], identities: [idA], bindings: [relabelled], assigned: [aai(p, bindA, idA)] });
    const spec = expectedSpec(p, relabelled, idA, 'Assigned');
    expect(run(s)).toEqual(
      planOf({
        updateAssigned: [
          { before: { key: spec.key, namespace: 'default', name: spec.name, resourceVersion: '7' }, after: spec, afterTarget: undefined },
        ],
      }),
    );
  });

  it('rewrites the AAI for a pod recreated under the same name, so it names the new pod incarnation, with no ARM call', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const reborn = { ...p, uid: 'uid-reborn' };
    const s = snapshot({ pods: [reborn], nodes: [vmNode('vm0')], identities: [idA], bindings: [bindA], assigned: [aai(p, bindA, idA)] });
    const spec = expectedSpec(reborn, bindA, idA, 'Assigned');
    expect(spec.labels['aadpodidentity.k8s.io/pod-uid']).toBe('uid-reborn');
    expect(run(s)).toEqual(
      planOf({
        updateAssigned: [
          { before: { key: spec.key, namespace: 'default', name: spec.name, resourceVersion: '7' }, after: spec, afterTarget: undefined },
        ],
      }),
    );
  });

  it('leaves an AAI written without a pod uid alone (no churn on upgrade)', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const legacy = { ...aai(p, bindA, idA), podUid: '', labels: { nodename: 'vm0' } };
    const s = snapshot({ pods: [p], nodes: [vmNode('vm0')], identities: [idA], bindings: [bindA], assigned: [legacy] });
    expect(isEmptyPlan(run(s))).toBe(true);
  });

  it('updates an AAI whose pod came back on another node: old VM loses the identity first, new VM gains it', () => {
    const old = pod('default', 'db-0', 'sel-a', 'vm0');
    const moved = pod('default', 'db-0', 'sel-a', 'vm1');
    const s = snapshot({
      pods: [moved],
      nodes: [vmNode('vm0'), vmNode('vm1')],
      identities: [idA],
      bindings: [bindA],
      assigned: [aai(old, bindA, idA)],
    });
    const spec = expectedSpec(moved, bindA, idA);
    expect(run(s)).toEqual(
      planOf({
        updateAssigned: [
          { before: { key: spec.key, namespace: 'default', name: spec.name, resourceVersion: '7' }, after: spec, afterTarget: 'vm/vm0' },
        ],
        statusUpdates: [{ key: spec.key, namespace: 'default', name: spec.name, from: 'Created', to: 'Assigned', afterTarget: 'vm/vm1' }],
        targetOps: [
          { target: vmTarget('vm0'), add: [], remove: [cid('id-a')] },
          { target: vmTarget('vm1'), add: [cid('id-a')], remove: [] },
        ],
      }),
    );
  });

  it('deletes AAIs and detaches when the identity is deleted, and likewise when the binding is deleted', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const base = { pods: [p], nodes: [vmNode('vm0')], assigned: [aai(p, bindA, idA)] };
    const expected = planOf({
      deleteAssigned: [
        { key: 'default/web-default-id-a', namespace: 'default', name: 'web-default-id-a', resourceVersion: '7', cause: 'NotDesired', markUnassigned: true, afterTarget: 'vm/vm0' },
      ],
      targetOps: [{ target: vmTarget('vm0'), add: [], remove: [cid('id-a')] }],
    });
    const noIdentity = run(snapshot({ ...base, bindings: [bindA] }));
    expect(noIdentity).toEqual({
      ...expected,
      skipped: [
        skip('AzureIdentityBinding', 'default', 'bind-a', 'IdentityNotFound', 'no usable AzureIdentity default/id-a'),
        skip('Pod', 'default', 'web', 'NoMatchingBinding', 'no usable AzureIdentityBinding has selector "sel-a"'),
      ],
    });
    const noBinding = run(snapshot({ ...base, identities: [idA] }));
    expect(noBinding).toEqual({
      ...expected,
      skipped: [skip('Pod', 'default', 'web', 'NoMatchingBinding', 'no usable AzureIdentityBinding has selector "sel-a"')],
    });
  });
});

describe('MIC plan: ARM reconcile and no-op avoidance', () => {
  it('re-adds a manually detached identity and keeps its AAI Assigned', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const s = snapshot({
      pods: [p],
      nodes: [vmNode('vm0')],
      identities: [idA],
      bindings: [bindA],
      assigned: [aai(p, bindA, idA)],
      attachments: new Map([['vm/vm0', attached([cid('other')], true)]]),
    });
    expect(run(s)).toEqual(planOf({ targetOps: [{ target: vmTarget('vm0'), add: [cid('id-a')], remove: [] }] }));
  });

  it('plans nothing when everything is in place, whether ARM state is known or not', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const base = { pods: [p], nodes: [vmNode('vm0')], identities: [idA], bindings: [bindA], assigned: [aai(p, bindA, idA)] };
    expect(run(snapshot(base))).toEqual(planOf({}));
    const known = snapshot({ ...base, attachments: new Map([['vm/vm0', attached([rid('id-a')])]]) });
    expect(run(known)).toEqual(planOf({}));
    // Legacy '' state counts as Assigned.
    expect(run(snapshot({ ...base, assigned: [aai(p, bindA, idA, '')] }))).toEqual(planOf({}));
  });

  it('treats a node whose provider ID names no VM: SP identities still Assigned, user-assigned stay Created', () => {
    const sp = identity('default', 'sp', { type: 1 });
    const bindSp = binding('default', 'bind-sp', 'sp', 'sel-a');
    const p = pod('default', 'web', 'sel-a', 'kind-node');
    const s = snapshot({ pods: [p], nodes: [node('kind-node', undefined)], identities: [idA, sp], bindings: [bindA, bindSp] });
    const specA = expectedSpec(p, bindA, idA);
    const specSp = expectedSpec(p, bindSp, sp);
    expect(run(s)).toEqual(
      planOf({
        createAssigned: [specA, specSp],
        statusUpdates: [{ key: specSp.key, namespace: 'default', name: specSp.name, from: 'Created', to: 'Assigned', afterTarget: undefined }],
        skipped: [
          skip('Node', '', 'kind-node', 'NodeWithoutTarget', 'spec.providerID does not name an Azure VM or scale set; user-assigned identities stay Created'),
        ],
      }),
    );
  });
});

describe('MIC plan: own writes not yet seen', () => {
  it('does not create again an AAI we just created, and does not delete again one we just deleted', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const gone = pod('default', 'old', 'sel-a', 'vm0');
    const s = snapshot({
      pods: [p],
      nodes: [vmNode('vm0')],
      identities: [idA],
      bindings: [bindA],
      assigned: [aai(gone, bindA, idA)],
      attachments: new Map([['vm/vm0', attached([cid('id-a')])]]),
      pending: { created: new Set(['default/web-default-id-a']), deleted: new Set(['default/old-default-id-a']) },
    });
    expect(run(s)).toEqual(planOf({}));
  });

  it('does not re-create an AAI we just deleted while the cache still shows it', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const s = snapshot({
      pods: [p],
      nodes: [vmNode('vm0')],
      identities: [idA],
      bindings: [bindA],
      assigned: [aai(p, bindA, idA)],
      pending: { created: new Set(), deleted: new Set(['default/web-default-id-a']) },
    });
    const plan = run(s);
    expect(isEmptyPlan(plan)).toBe(true);
    expect(plan.skipped.map((k) => k.code)).toEqual(['PreviousStillDeleting']);
  });

  it('still asks ARM for a just-created AAI identity when the attachment is not known', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const s = snapshot({
      pods: [p],
      nodes: [vmNode('vm0')],
      identities: [idA],
      bindings: [bindA],
      pending: { created: new Set(['default/web-default-id-a']), deleted: new Set() },
    });
    expect(run(s)).toEqual(planOf({ targetOps: [{ target: vmTarget('vm0'), add: [cid('id-a')], remove: [] }] }));
  });

  it('waits for a previous AAI of the same name to finish deleting, finalizing it without detaching', () => {
    const p = pod('default', 'web', 'sel-a', 'vm0');
    const old = assigned(expectedSpec(p, bindA, idA), 'Assigned', { deleting: true });
    const s = snapshot({ pods: [p], nodes: [vmNode('vm0')], identities: [idA], bindings: [bindA], assigned: [old] });
    expect(run(s)).toEqual(
      planOf({
        deleteAssigned: [
          { key: 'default/web-default-id-a', namespace: 'default', name: 'web-default-id-a', resourceVersion: '7', cause: 'AlreadyDeleting', markUnassigned: false, afterTarget: undefined },
        ],
        skipped: [
          skip(
            'AzureAssignedIdentity',
            'default',
            'web-default-id-a',
            'PreviousStillDeleting',
            'waiting for the previous AzureAssignedIdentity to be deleted before creating it again for pod default/web',
          ),
        ],
      }),
    );
    // Without our finalizer the API server finishes the deletion on its own.
    const bare = assigned(expectedSpec(p, bindA, idA), 'Assigned', { deleting: true, finalizers: [] });
    expect(run(snapshot({ ...s, assigned: [bare] })).deleteAssigned).toEqual([]);
    expect(old.finalizers).toEqual([ASSIGNED_IDENTITY_FINALIZER]);
  });
});
