import { describe, expect, it } from 'vitest';
import {
  identityRefusal,
  parseNamespacePolicy,
  PERMITTED_IDENTITIES_ANNOTATION as KEY,
  policyRefusal,
} from '../../src/crds/namespace-policy.js';

const A = '/subscriptions/s1/resourceGroups/team-a-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a';
const B = '/subscriptions/s1/resourceGroups/team-b-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b';
const msi = (resourceID: string) => ({ type: 0, resourceID, clientID: '00000000-0000-0000-0000-00000000000a' });

describe('namespace identity policy', () => {
  it('permits nothing when the annotation is absent', () => {
    expect(parseNamespacePolicy({})).toBeUndefined();
    expect(policyRefusal('team-b', undefined, msi(B))).toContain(KEY);
  });

  it('matches resource IDs case-insensitively with * inside one segment', () => {
    const p = parseNamespacePolicy({
      [KEY]: '/SUBSCRIPTIONS/s1/resourcegroups/team-b-rg/providers/microsoft.managedidentity/userAssignedIdentities/*',
    });
    expect(policyRefusal('team-b', p, msi(B))).toBeUndefined();
    expect(policyRefusal('team-b', p, msi(A))).toContain('is not permitted');
    const wide = parseNamespacePolicy({ [KEY]: '/subscriptions/s1/resourceGroups/*' });
    expect(policyRefusal('team-b', wide, msi(B))).toContain('is not permitted');
  });

  it('accepts comma and newline separated entries', () => {
    const p = parseNamespacePolicy({ [KEY]: `${A},\n ${B}\n` });
    expect(p?.resourceIdPatterns).toHaveLength(2);
    expect(policyRefusal('x', p, msi(A))).toBeUndefined();
  });

  it('matches service principal identities by clientid: entries only', () => {
    const p = parseNamespacePolicy({ [KEY]: `clientid:1111*, ${B}` });
    expect(policyRefusal('x', p, { type: 1, resourceID: '', clientID: '11112222-aaaa' })).toBeUndefined();
    expect(policyRefusal('x', p, { type: 1, resourceID: B, clientID: '22221111' })).toContain('client ID');
  });

  it('treats a malformed annotation as deny with a clear problem', () => {
    const p = parseNamespacePolicy({ [KEY]: `${B}, team-a-rg` });
    expect(p?.problems[0]).toContain('team-a-rg');
    expect(policyRefusal('team-b', p, msi(B))).toContain('is invalid');
  });

  it('treats certificate service principals (type 2) like type 1, and an unknown type as not permitted', () => {
    const p = parseNamespacePolicy({ [KEY]: `clientid:1111*, ${B}` });
    expect(policyRefusal('x', p, { type: 2, resourceID: '', clientID: '11112222' })).toBeUndefined();
    expect(policyRefusal('x', p, { type: 2, resourceID: B, clientID: '3333' })).toContain('client ID');
    expect(policyRefusal('x', p, { type: null, resourceID: B, clientID: '1111' })).toContain('unknown type');
  });

  it("names the entry to add in the refusing namespace's message", () => {
    expect(policyRefusal('team-b', undefined, msi(A))).toContain(`add "${A.toLowerCase()}" to the ${KEY} annotation of Namespace team-b`);
  });

  it("checks the identity's own namespace and the pod's", () => {
    const policies = new Map([
      ['team-a', parseNamespacePolicy({ [KEY]: A })],
      ['team-b', parseNamespacePolicy({ [KEY]: B })],
    ]);
    expect(identityRefusal(policies, { ...msi(A), namespace: 'team-a' }, 'team-a')).toBeUndefined();
    expect(identityRefusal(policies, { ...msi(A), namespace: 'team-b' }, 'team-b')?.namespace).toBe('team-b');
    expect(identityRefusal(policies, { ...msi(A), namespace: 'team-a' }, 'team-b')?.namespace).toBe('team-b');
    expect(identityRefusal(policies, { ...msi(A), namespace: 'team-c' }, 'team-a')?.namespace).toBe('team-c');
  });
});
