// MIC's pure core under --namespace-identity-policy: which namespace may use which Azure identity (issue 10, row 6).
import { describe, expect, it } from 'vitest';
import { parseNamespacePolicy, PERMITTED_IDENTITIES_ANNOTATION as KEY, type NamespacePolicies } from '../../src/crds/namespace-policy.js';
import { computeDesired } from '../../src/mic/core/index.js';
import { binding, identity, pod, policy, rid, snapshot } from './mic-core.builders.js';

const permits = (entries: Record<string, string | undefined>): NamespacePolicies =>
  new Map(Object.entries(entries).map(([ns, v]) => [ns, v === undefined ? undefined : parseNamespacePolicy({ [KEY]: v })]));

// team-b's AzureIdentity names team-a's Azure identity (same resource ID and client ID).
const stolen = identity('team-b', 'stolen', { resourceID: rid('team-a-id'), clientID: '0000aaaa-0000-0000-0000-000000000000' });
const own = identity('team-a', 'mine', { resourceID: rid('team-a-id'), clientID: '0000aaaa-0000-0000-0000-000000000000' });
const bindings = [binding('team-b', 'bb', 'stolen', 'b-app'), binding('team-a', 'ba', 'mine', 'a-app')];
const pods = [pod('team-b', 'attacker', 'b-app', 'vm0'), pod('team-a', 'victim', 'a-app', 'vm0')];
const policies = permits({ 'team-a': rid('team-a-id'), 'team-b': undefined });

describe('MIC namespace identity policy', () => {
  it('off (the default) assigns what any namespace names, as the original', () => {
    const got = computeDesired(snapshot({ pods, identities: [stolen, own], bindings, namespacePolicies: policies }), policy());
    expect(got.assignments.map((a) => a.key).sort()).toEqual(['default/attacker-team-b-stolen', 'default/victim-team-a-mine']);
  });

  it('enforce skips an identity its namespace does not permit, naming the annotation and the entry to add', () => {
    const got = computeDesired(
      snapshot({ pods, identities: [stolen, own], bindings, namespacePolicies: policies }),
      policy({ namespaceIdentityPolicy: 'enforce' }),
    );
    expect(got.assignments.map((a) => a.key)).toEqual(['default/victim-team-a-mine']);
    const refusal = got.skipped.find((s) => s.code === 'IdentityNotPermitted');
    expect(refusal?.subject).toEqual({ kind: 'AzureIdentity', namespace: 'team-b', name: 'stolen' });
    expect(refusal?.reason).toContain(`has no ${KEY} annotation`);
    expect(refusal?.reason).toContain(`add "${rid('team-a-id').toLowerCase()}"`);
  });

  it('enforce with no Namespace known at all permits nothing', () => {
    const got = computeDesired(snapshot({ pods, identities: [stolen, own], bindings }), policy({ namespaceIdentityPolicy: 'enforce' }));
    expect(got.assignments).toEqual([]);
    expect(got.skipped.filter((s) => s.code === 'IdentityNotPermitted').map((s) => s.subject.name).sort()).toEqual(['mine', 'stolen']);
  });

  it("enforce checks the pod's namespace too: a binding cannot hand a permitted identity to another namespace's pods", () => {
    // Not namespaced: team-b's pod carries team-a's selector, which the original would honour.
    const intruder = pod('team-b', 'intruder', 'a-app', 'vm0');
    const got = computeDesired(
      snapshot({ pods: [intruder, pods[1]!], identities: [own], bindings: [bindings[1]!], namespacePolicies: policies }),
      policy({ namespaceIdentityPolicy: 'enforce' }),
    );
    expect(got.assignments.map((a) => a.pod)).toEqual(['victim']);
    expect(got.skipped).toContainEqual(expect.objectContaining({
      subject: { kind: 'Pod', namespace: 'team-b', name: 'intruder' },
      code: 'IdentityNotPermitted',
    }));
  });

  it('enforce: a malformed annotation denies everything in that namespace', () => {
    const got = computeDesired(
      snapshot({ pods: [pods[1]!], identities: [own], bindings: [bindings[1]!], namespacePolicies: permits({ 'team-a': `${rid('team-a-id')}, rg-a` }) }),
      policy({ namespaceIdentityPolicy: 'enforce' }),
    );
    expect(got.assignments).toEqual([]);
    expect(got.skipped.find((s) => s.code === 'IdentityNotPermitted')?.reason).toContain('is invalid');
  });

  it('enforce permits service principals by clientid: entries', () => {
    const sp = identity('team-a', 'sp', { type: 1, clientID: 'ABCD0000-1111-2222-3333-444444444444' });
    const spBinding = binding('team-a', 'bs', 'sp', 'a-app');
    const run = (entry: string) =>
      computeDesired(
        snapshot({ pods: [pods[1]!], identities: [sp], bindings: [spBinding], namespacePolicies: permits({ 'team-a': entry }) }),
        policy({ namespaceIdentityPolicy: 'enforce' }),
      ).assignments.length;
    expect(run('clientid:abcd0000-*')).toBe(1);
    expect(run(rid('whatever'))).toBe(0);
  });
});
