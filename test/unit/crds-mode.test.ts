// spec.mode (issue 13): Attached by default, Federated only for a complete user-assigned identity.
import { describe, expect, it } from 'vitest';
import { normalizeAssignedIdentity, normalizeAzureIdentity } from '../../src/crds/normalize.js';
import { assignedIdentityWire } from '../../src/mic/adapters/kube-assigned.js';
import { identityMode, type AzureIdentity } from '../../src/crds/types.js';
import { validateAzureIdentity } from '../../src/crds/validate.js';

const CLIENT = '00000000-1111-2222-3333-444455556666';
const RID = '/subscriptions/sub/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1';
const meta = { name: 'demo', namespace: 'ns1', uid: 'u1', resourceVersion: '7' };

function identity(spec: Record<string, unknown>): { view: AzureIdentity; problems: readonly string[] } {
  const r = normalizeAzureIdentity({ metadata: meta, spec });
  if (r.value === null) throw new Error('no view');
  return { view: r.value, problems: r.problems };
}

describe('spec.mode normalisation', () => {
  it.each([
    ['absent', {}],
    ['empty', { mode: '' }],
    ['null', { mode: null }],
  ])('reads an %s mode as Attached, silently (every manifest of the original)', (_what, extra) => {
    const { view, problems } = identity({ type: 0, resourceID: RID, clientID: CLIENT, ...extra });
    expect(view.mode).toBe('Attached');
    expect(view.invalidMode).toBe('');
    expect(problems).toEqual([]);
    expect(validateAzureIdentity(view)).toEqual([]);
  });

  it('reads Federated and Attached as written', () => {
    expect(identity({ type: 0, resourceID: RID, clientID: CLIENT, mode: 'Federated' }).view.mode).toBe('Federated');
    expect(identity({ type: 0, resourceID: RID, clientID: CLIENT, mode: 'Attached' }).view.mode).toBe('Attached');
  });

  it('reads a case variant (stored before the enum) with a problem, as numeric strings are read for type', () => {
    const { view, problems } = identity({ type: 0, resourceID: RID, clientID: CLIENT, mode: 'federated' });
    expect(view.mode).toBe('Federated');
    expect(problems).toEqual(['spec.mode "federated" read as Federated']);
  });

  it('folds a capitalised key as every other spec field is folded', () => {
    const r = normalizeAzureIdentity({ metadata: meta, spec: { type: 0, resourceID: RID, clientID: CLIENT, Mode: 'Federated' } });
    expect(r.value?.mode).toBe('Federated');
    expect(r.legacyFields).toEqual(['spec.Mode']);
  });

  it.each([['Projected'], [3], [true], [{}]])('makes an unknown mode %j unusable, never Attached (fail closed)', (mode) => {
    const { view } = identity({ type: 0, resourceID: RID, clientID: CLIENT, mode });
    expect(view.mode).toBeNull();
    expect(identityMode(view)).toBeNull();
    const reasons = validateAzureIdentity(view);
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatch(/^spec\.mode must be Attached \(the default\) or Federated, got /);
  });

  it('treats a hand-built view without mode as Attached', () => {
    const { view } = identity({ type: 0, resourceID: RID, clientID: CLIENT });
    const { mode: _mode, invalidMode: _invalid, ...bare } = view;
    expect(identityMode(bare)).toBe('Attached');
    expect(validateAzureIdentity(bare)).toEqual([]);
  });
});

describe('spec.mode validation', () => {
  it('accepts Federated on a complete user-assigned identity', () => {
    expect(validateAzureIdentity(identity({ type: 0, resourceID: RID, clientID: CLIENT, mode: 'Federated' }).view)).toEqual([]);
  });

  it('accepts Federated when type is absent (type 0, as the original reads it)', () => {
    expect(validateAzureIdentity(identity({ resourceID: RID, clientID: CLIENT, mode: 'Federated' }).view)).toEqual([]);
  });

  it.each([
    [1, 'a service principal (type 1)'],
    [2, 'a service principal with certificate (type 2)'],
  ])('refuses Federated on type %i and says how to fix it', (type, what) => {
    const { view } = identity({
      type,
      clientID: CLIENT,
      tenantID: 'tenant',
      clientPassword: { name: 'sp', namespace: 'ns1' },
      mode: 'Federated',
    });
    expect(validateAzureIdentity(view)).toEqual([
      `spec.mode Federated needs a user-assigned managed identity (type 0), not ${what}: ` +
        `remove spec.mode (or set it to Attached) to use the service principal's own credential`,
    ]);
  });

  it('keeps service principals valid in Attached mode', () => {
    const { view } = identity({ type: 1, clientID: CLIENT, tenantID: 't', clientPassword: { name: 'sp', namespace: 'ns1' }, mode: 'Attached' });
    expect(validateAzureIdentity(view)).toEqual([]);
  });

  it('says why a Federated identity needs its clientID and resourceID', () => {
    const { view } = identity({ type: 0, mode: 'Federated' });
    expect(validateAzureIdentity(view)).toEqual([
      'spec.clientID is empty; a Federated identity is exchanged at Azure AD under its client ID',
      'spec.resourceID is empty; a Federated identity needs its ARM ID, where MIC keeps its federated credentials',
    ]);
  });

  it('reports a malformed clientID or resourceID of a Federated identity as for any type-0 identity', () => {
    const { view } = identity({ type: 0, clientID: 'not-a-guid', resourceID: '/subscriptions/x', mode: 'Federated' });
    const reasons = validateAzureIdentity(view);
    expect(reasons[0]).toMatch(/^spec\.clientID is not a GUID/);
    expect(reasons[1]).toMatch(/^spec\.resourceID "\/subscriptions\/x" has too few segments/);
  });
});

describe('the AzureAssignedIdentity copy MIC writes', () => {
  const binding = { ...meta, labels: {}, annotations: {}, creationTimestamp: '', finalizers: [], deleting: false, azureIdentity: 'demo', selector: 's', weight: null };
  const specFor = (view: AzureIdentity) => ({
    key: 'ns1/p-ns1-demo', namespace: 'ns1', name: 'p-ns1-demo', identityRef: view, bindingRef: binding,
    pod: 'p', podNamespace: 'ns1', nodeName: 'n1', labels: {}, finalizers: [], state: 'Created' as const,
  });

  it('keeps Federated, so the copy reads back as Federated', () => {
    const wire = assignedIdentityWire(specFor(identity({ type: 0, resourceID: RID, clientID: CLIENT, mode: 'Federated' }).view), '1');
    expect(wire.spec?.azureIdentityRef?.spec?.mode).toBe('Federated');
    expect(normalizeAssignedIdentity(wire).value?.identityRef?.mode).toBe('Federated');
  });

  it('writes no mode for an Attached identity: the copy stays what the original wrote', () => {
    const wire = assignedIdentityWire(specFor(identity({ type: 0, resourceID: RID, clientID: CLIENT }).view), '1');
    expect(wire.spec?.azureIdentityRef?.spec).not.toHaveProperty('mode');
  });
});
