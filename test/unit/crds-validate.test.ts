import { describe, expect, it } from 'vitest';
import { normalizeAzureIdentity, normalizeBinding, normalizeException } from '../../src/crds/normalize.js';
import type { AzureIdentity, AzureIdentityBinding } from '../../src/crds/types.js';
import {
  parseUserAssignedIdentityID,
  validateAzureIdentity,
  validateBinding,
  validateException,
} from '../../src/crds/validate.js';

const CLIENT = '00000000-1111-2222-3333-444455556666';
const RID = '/subscriptions/sub-1/resourceGroups/my-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-1';

function identity(spec: Record<string, unknown>): AzureIdentity {
  const r = normalizeAzureIdentity({ metadata: { name: 'id', namespace: 'ns' }, spec });
  if (r.value === null) throw new Error('test identity did not normalise');
  return r.value;
}

function binding(spec: Record<string, unknown>): AzureIdentityBinding {
  const r = normalizeBinding({ metadata: { name: 'b', namespace: 'ns' }, spec });
  if (r.value === null) throw new Error('test binding did not normalise');
  return r.value;
}

describe('validateAzureIdentity', () => {
  it('accepts a complete identity of each type', () => {
    expect(validateAzureIdentity(identity({ type: 0, resourceID: RID, clientID: CLIENT }))).toEqual([]);
    const sp = { tenantID: 'tenant', clientID: CLIENT, clientPassword: { name: 's', namespace: 'ns' } };
    expect(validateAzureIdentity(identity({ type: 1, ...sp }))).toEqual([]);
    expect(validateAzureIdentity(identity({ type: 2, ...sp }))).toEqual([]);
  });

  it('accepts a legacy-spelled identity once normalised', () => {
    expect(validateAzureIdentity(identity({ ResourceID: RID, ClientID: CLIENT }))).toEqual([]);
  });

  it('requires resourceID and a GUID clientID for type 0', () => {
    const reasons = validateAzureIdentity(identity({ type: 0 }));
    expect(reasons).toHaveLength(2);
    expect(reasons[0]).toMatch(/^spec\.clientID is empty/);
    expect(reasons[1]).toMatch(/^spec\.resourceID is empty/);
    expect(validateAzureIdentity(identity({ type: 0, resourceID: RID, clientID: 'not-a-guid' }))).toEqual([
      'spec.clientID is not a GUID (expected 8-4-4-4-12 hex digits), got 10 characters',
    ]);
  });

  it('requires tenant, clientID and the secret reference for service principals', () => {
    const reasons = validateAzureIdentity(identity({ type: 1 }));
    expect(reasons.map((r) => r.split(' ')[0])).toEqual([
      'spec.clientID',
      'spec.tenantID',
      'spec.clientPassword.name',
      'spec.clientPassword.namespace',
    ]);
    const noNs = validateAzureIdentity(identity({ type: 2, tenantID: 't', clientID: CLIENT, clientPassword: { name: 's' } }));
    expect(noNs).toEqual(['spec.clientPassword.namespace is empty; the Secret is looked up in that namespace']);
  });

  it('does not require a resourceID for service principals (the original did not check it)', () => {
    const sp = { type: 1, tenantID: 't', clientID: CLIENT, clientPassword: { name: 's', namespace: 'ns' }, resourceID: 'junk' };
    expect(validateAzureIdentity(identity(sp))).toEqual([]);
  });

  it('reports an unknown type with the value given', () => {
    expect(validateAzureIdentity(identity({ type: 3 }))).toEqual([
      'spec.type must be 0 (user-assigned managed identity), 1 (service principal with secret) or 2 (service principal with certificate), got number 3',
    ]);
    expect(validateAzureIdentity(identity({ type: 'msi' }))[0]).toMatch(/got "msi"$/);
  });
});

describe('parseUserAssignedIdentityID', () => {
  it('splits a valid ID, matching the fixed segments case-insensitively', () => {
    expect(parseUserAssignedIdentityID(RID)).toEqual({ subscriptionID: 'sub-1', resourceGroup: 'my-rg', name: 'id-1' });
    const lower = RID.toLowerCase();
    expect(parseUserAssignedIdentityID(lower)).toEqual({ subscriptionID: 'sub-1', resourceGroup: 'my-rg', name: 'id-1' });
  });

  it.each([
    ['', /is empty/],
    ['   ', /is empty/],
    ['subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/n', /must start with \/subscriptions\//],
    [`${RID}/`, /ends with '\/'/],
    ['/subscriptions//resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/n', /empty segment .* position 2/],
    ['/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/', /ends with '\/'/],
    ['/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities', /too few segments \(7, expected 8\)/],
    [`${RID}/extra`, /extra segments \(9, expected 8\)/],
    ['/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/userAssignedIdentities/n', /'Microsoft.Compute' where 'Microsoft.ManagedIdentity' is expected/],
    ['/subscriptions/s/resourceGroup/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/n', /'resourceGroup' where 'resourcegroups' is expected/],
    ['/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentity/n', /'userAssignedIdentity' where 'userAssignedIdentities'/],
    [`${RID} `, /contains whitespace/],
  ])('rejects %j saying what is wrong', (id, message) => {
    const parsed = parseUserAssignedIdentityID(id);
    expect('error' in parsed && parsed.error).toMatch(message);
  });

  it('rejects IDs the original regex accepted loosely (extra path after the name)', () => {
    const loose = /\/subscriptions\/(.+?)\/resourcegroups\/(.+?)\/providers\/Microsoft.ManagedIdentity\/userAssignedIdentities\/(.+)/i;
    const id = `${RID}/extra`;
    expect(loose.test(id)).toBe(true);
    expect('error' in parseUserAssignedIdentityID(id)).toBe(true);
  });
});

describe('validateBinding', () => {
  it('accepts a binding with identity and selector', () => {
    expect(validateBinding(binding({ azureIdentity: 'id', selector: 'my-app_1.0' }))).toEqual([]);
  });

  it('requires both fields', () => {
    expect(validateBinding(binding({}))).toEqual([
      'spec.azureIdentity is empty; it must name an AzureIdentity in the same namespace',
      'spec.selector is empty; pods match when their aadpodidbinding label equals it',
    ]);
  });

  it('rejects a selector no pod label can equal', () => {
    for (const selector of ['has space', '-lead', 'x'.repeat(64), 'a/b']) {
      const reasons = validateBinding(binding({ azureIdentity: 'id', selector }));
      expect(reasons, selector).toHaveLength(1);
      expect(reasons[0]).toMatch(/is not a valid label value/);
    }
  });
});

describe('validateException', () => {
  it('reports an exception that matches nothing', () => {
    const empty = normalizeException({ metadata: { name: 'e', namespace: 'ns' }, spec: {} }).value;
    const full = normalizeException({ metadata: { name: 'e', namespace: 'ns' }, spec: { podLabels: { app: 'mic' } } }).value;
    if (empty === null || full === null) throw new Error('exceptions did not normalise');
    expect(validateException(empty)).toEqual(['spec.podLabels is empty; the exception matches no pod']);
    expect(validateException(full)).toEqual([]);
  });
});
