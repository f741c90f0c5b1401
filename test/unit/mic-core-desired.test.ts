import { describe, expect, it } from 'vitest';
import { computeDesired, skip, type DesiredAssignment } from '../../src/mic/core/index.js';
import type { AzureIdentity, AzureIdentityBinding, PodView } from '../../src/crds/types.js';
import {
  binding,
  cid,
  expectedSpec,
  identity,
  pod,
  policy,
  run,
  snapshot,
  vmNode,
  vmTarget,
} from './mic-core.builders.js';

function want(p: PodView, b: AzureIdentityBinding, id: AzureIdentity, namespace = 'default'): DesiredAssignment {
  const name = `${p.name}-${p.namespace}-${id.name}`;
  return {
    key: `${namespace}/${name}`,
    namespace,
    name,
    identity: id,
    binding: b,
    pod: p.name,
    podNamespace: p.namespace,
    podUid: p.uid,
    nodeName: p.nodeName,
  };
}

describe('MIC desired state', () => {
  it('matches the pod label to the selector by exact string equality, in any namespace when not namespaced', () => {
    const id = identity('team', 'id');
    const b = binding('team', 'b', 'id', 'Sel');
    const other = pod('other', 'x', 'Sel', 'vm0');
    const wrongCase = pod('team', 'y', 'sel', 'vm0');
    const unlabelled = pod('team', 'z', undefined, 'vm0');
    const got = computeDesired(snapshot({ pods: [wrongCase, other, unlabelled], identities: [id], bindings: [b] }), policy());
    expect(got).toEqual({
      assignments: [want(other, b, id)],
      skipped: [skip('Pod', 'team', 'y', 'NoMatchingBinding', 'no usable AzureIdentityBinding has selector "sel"')],
    });
  });

  it("skips a service principal whose Secret is in another namespace or whose adEndpoint is not allowed, unless the admin allows it", () => {
    const stolen: AzureIdentity = { ...identity('team-b', 'stolen', { type: 1 }), clientPassword: { name: 'creds', namespace: 'team-a' } };
    const evil: AzureIdentity = { ...identity('team-b', 'evil', { type: 1 }), adEndpoint: 'https://attacker.example/' };
    const fine: AzureIdentity = { ...identity('team-b', 'fine', { type: 1 }), adEndpoint: 'https://LOGIN.microsoftonline.com/' };
    const bindings = [binding('team-b', 'b1', 'stolen', 's1'), binding('team-b', 'b2', 'evil', 's2'), binding('team-b', 'b3', 'fine', 's3')];
    const pods = [pod('team-b', 'p1', 's1', 'vm0'), pod('team-b', 'p2', 's2', 'vm0'), pod('team-b', 'p3', 's3', 'vm0')];
    const world = snapshot({ pods, identities: [stolen, evil, fine], bindings });

    const got = computeDesired(world, policy());
    expect(got.assignments.map((a) => a.identity.name)).toEqual(['fine']);
    const refused = got.skipped.filter((s) => s.subject.kind === 'AzureIdentity');
    expect(refused.map((s) => `${s.subject.name}:${s.code}`)).toEqual(['evil:AdEndpointNotAllowed', 'stolen:CrossNamespaceSecret']);
    expect(refused[0]?.reason).toContain('--allowed-ad-endpoints');
    expect(refused[1]?.reason).toContain('--allow-cross-namespace-secrets');
    expect(got.skipped.filter((s) => s.code === 'IdentityNotFound').map((s) => s.subject.name)).toEqual(['b1', 'b2']);

    const allowed = computeDesired(
      world,
      policy({ credentials: { allowCrossNamespaceSecrets: true, allowedAuthorities: new Set(['https://login.microsoftonline.com', 'https://attacker.example']) } }),
    );
    expect(allowed.assignments.map((a) => a.identity.name)).toEqual(['stolen', 'evil', 'fine']); // by AAI key: p1, p2, p3
    expect(allowed.skipped).toEqual([]);
  });

  it('gives nothing to unscheduled pods and says why', () => {
    const id = identity('default', 'id');
    const b = binding('default', 'b', 'id', 's');
    const got = computeDesired(snapshot({ pods: [pod('default', 'p', 's', '')], identities: [id], bindings: [b] }), policy());
    expect(got).toEqual({
      assignments: [],
      skipped: [skip('Pod', 'default', 'p', 'PodNotScheduled', 'pod has no spec.nodeName yet')],
    });
  });

  it('in namespaced mode by flag requires pod, binding and identity in one namespace and puts the AAI there', () => {
    const id = identity('team', 'id');
    const b = binding('team', 'b', 'id', 's');
    const inside = pod('team', 'in', 's', 'vm0');
    const outside = pod('other', 'out', 's', 'vm0');
    const got = computeDesired(snapshot({ pods: [outside, inside], identities: [id], bindings: [b] }), policy({ forceNamespaced: true }));
    expect(got).toEqual({
      assignments: [want(inside, b, id, 'team')],
      skipped: [
        skip('Pod', 'other', 'out', 'NamespaceMismatch', 'binding team/b and identity team/id are namespaced and the pod is in namespace other'),
      ],
    });
  });

  it('in namespaced mode by annotation applies only to the annotated identity', () => {
    const scoped = identity('team', 'scoped', { namespaced: true });
    const open = identity('team', 'open');
    const bScoped = binding('team', 'b-scoped', 'scoped', 's');
    const bOpen = binding('team', 'b-open', 'open', 's');
    const outside = pod('other', 'out', 's', 'vm0');
    const inside = pod('team', 'in', 's', 'vm0');
    const got = computeDesired(
      snapshot({ pods: [inside, outside], identities: [scoped, open], bindings: [bScoped, bOpen] }),
      policy(),
    );
    expect(got.assignments).toEqual([
      want(inside, bOpen, open),
      want(outside, bOpen, open),
      want(inside, bScoped, scoped, 'team'),
    ]);
    expect(got.skipped.map((k) => [k.subject.namespace, k.subject.name, k.code])).toEqual([['other', 'out', 'NamespaceMismatch']]);
  });

  it('lets the first namespace win when same-named identities in two namespaces would give one AAI name', () => {
    const idA = identity('alpha', 'shared');
    const idZ = identity('zeta', 'shared');
    const bA = binding('alpha', 'b', 'shared', 's');
    const bZ = binding('zeta', 'b', 'shared', 's');
    const p = pod('default', 'p', 's', 'vm0');
    const got = computeDesired(snapshot({ pods: [p], identities: [idZ, idA], bindings: [bZ, bA] }), policy());
    expect(got).toEqual({
      assignments: [want(p, bA, idA)],
      skipped: [
        skip(
          'Pod',
          'default',
          'p',
          'NameConflict',
          'binding zeta/b (identity zeta/shared) would reuse AzureAssignedIdentity default/p-default-shared, already taken by ' +
            'binding alpha/b (identity alpha/shared)',
        ),
      ],
    });
  });

  it('skips invalid identities with their reasons without blocking the valid ones on the same selector', () => {
    const good = identity('default', 'good');
    const badId = identity('default', 'bad-id', { resourceID: '/subscriptions/x/resourcegroups/y' });
    const badClient = identity('default', 'bad-client', { clientID: 'not-a-guid' });
    const bindings = [
      binding('default', 'b-good', 'good', 's'),
      binding('default', 'b-bad-id', 'bad-id', 's'),
      binding('default', 'b-bad-client', 'bad-client', 's'),
    ];
    const p = pod('default', 'p', 's', 'vm0');
    const s = snapshot({ pods: [p], nodes: [vmNode('vm0')], identities: [badId, good, badClient], bindings });
    const plan = run(s);
    expect(plan.createAssigned).toEqual([expectedSpec(p, bindings[0], good)]);
    expect(plan.targetOps).toEqual([{ target: vmTarget('vm0'), add: [cid('good')], remove: [] }]);
    expect(plan.skipped.map((k) => [k.subject.kind, k.subject.name, k.code])).toEqual([
      ['AzureIdentity', 'bad-client', 'IdentityInvalid'],
      ['AzureIdentity', 'bad-id', 'IdentityInvalid'],
      ['AzureIdentityBinding', 'b-bad-client', 'IdentityNotFound'],
      ['AzureIdentityBinding', 'b-bad-id', 'IdentityNotFound'],
    ]);
    expect(plan.skipped[1].reason).toMatch(/^spec\.resourceID /);
    expect(plan.skipped[0].reason).toMatch(/^spec\.clientID /);
  });

  it('ignores identities and bindings that are being deleted', () => {
    const id = identity('default', 'id', { deleting: true });
    const b = binding('default', 'b', 'id', 's');
    const got = computeDesired(snapshot({ pods: [pod('default', 'p', 's', 'vm0')], identities: [id], bindings: [b] }), policy());
    expect(got.assignments).toEqual([]);
    expect(got.skipped.map((k) => k.code)).toEqual(['IdentityDeleting', 'IdentityNotFound', 'NoMatchingBinding']);
  });

  it('is deterministic whatever the input order', () => {
    const ids = ['a', 'b', 'c'].map((n) => identity('default', n));
    const bs = ['a', 'b', 'c'].map((n) => binding('default', `b-${n}`, n, n === 'c' ? 'a' : n));
    const pods = ['p3', 'p1', 'p2'].map((n, i) => pod(i === 0 ? 'z' : 'default', n, i === 2 ? 'b' : 'a', 'vm0'));
    const forward = computeDesired(snapshot({ pods, identities: ids, bindings: bs }), policy());
    const backward = computeDesired(
      snapshot({ pods: [...pods].reverse(), identities: [...ids].reverse(), bindings: [...bs].reverse() }),
      policy(),
    );
    expect(backward).toEqual(forward);
    expect(forward.assignments.map((a) => a.key)).toEqual([
      'default/p1-default-a',
      'default/p1-default-c',
      'default/p2-default-b',
      'default/p3-z-a',
      'default/p3-z-c',
    ]);
  });
});
