import { describe, expect, it } from 'vitest';
import {
  equalIgnoringCase,
  normalizeAssignedIdentity,
  normalizeAzureIdentity,
  normalizeBinding,
  normalizeException,
} from '../../src/crds/normalize.js';

const CLIENT = '00000000-1111-2222-3333-444455556666';
const RID = '/subscriptions/sub/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1';
const meta = { name: 'demo', namespace: 'ns1', uid: 'u1', resourceVersion: '7' };

describe('normalizeAzureIdentity', () => {
  it('reads a camelCase identity and reports nothing', () => {
    const r = normalizeAzureIdentity({
      apiVersion: 'aadpodidentity.k8s.io/v1',
      kind: 'AzureIdentity',
      metadata: { ...meta, annotations: { 'aadpodidentity.k8s.io/Behavior': 'namespaced' }, labels: { a: 'b' } },
      spec: { type: 0, resourceID: RID, clientID: CLIENT },
    });
    expect(r.problems).toEqual([]);
    expect(r.legacyFields).toEqual([]);
    expect(r.value).toMatchObject({
      name: 'demo',
      namespace: 'ns1',
      uid: 'u1',
      resourceVersion: '7',
      labels: { a: 'b' },
      type: 0,
      resourceID: RID,
      clientID: CLIENT,
      clientPassword: null,
      tenantID: '',
      auxiliaryTenantIDs: [],
      namespaced: true,
      deleting: false,
    });
  });

  it('folds every legacy capitalised spelling of the old tutorials into the camelCase fields', () => {
    const r = normalizeAzureIdentity({
      metadata: meta,
      spec: {
        Type: 1,
        ResourceID: RID,
        ClientID: CLIENT,
        ClientPassword: { Name: 'sp-secret', Namespace: 'ns1' },
        TenantID: 'tenant',
        AuxiliaryTenantIDs: ['t2', 't3'],
        ADEndpoint: 'https://login.example/',
        ADResourceID: 'res',
      },
    });
    expect(r.problems).toEqual([]);
    expect(r.value).toMatchObject({
      type: 1,
      resourceID: RID,
      clientID: CLIENT,
      clientPassword: { name: 'sp-secret', namespace: 'ns1' },
      tenantID: 'tenant',
      auxiliaryTenantIDs: ['t2', 't3'],
      adEndpoint: 'https://login.example/',
      adResourceID: 'res',
    });
    expect([...r.legacyFields].sort()).toEqual(
      [
        'spec.ADEndpoint',
        'spec.ADResourceID',
        'spec.AuxiliaryTenantIDs',
        'spec.ClientID',
        'spec.ClientPassword',
        'spec.ClientPassword.Name',
        'spec.ClientPassword.Namespace',
        'spec.ResourceID',
        'spec.TenantID',
        'spec.Type',
      ].sort(),
    );
  });

  it('accepts other casings Go decoded case-insensitively (ClientId, lower-case tags of old MIC)', () => {
    const r = normalizeAzureIdentity({ metadata: meta, spec: { resourceid: RID, ClientId: CLIENT } });
    expect(r.value).toMatchObject({ type: 0, resourceID: RID, clientID: CLIENT });
    expect([...r.legacyFields].sort()).toEqual(['spec.ClientId', 'spec.resourceid']);
  });

  it('lets the camelCase field win when both spellings are set, and says so', () => {
    const r = normalizeAzureIdentity({ metadata: meta, spec: { clientID: CLIENT, ClientID: 'old', type: 1, Type: 0 } });
    expect(r.value?.clientID).toBe(CLIENT);
    expect(r.value?.type).toBe(1);
    expect(r.legacyFields).toEqual([]);
    expect([...r.problems].sort()).toEqual(['spec.ClientID ignored: spec.clientID is set', 'spec.Type ignored: spec.type is set']);
  });

  it('uses the legacy spelling when the camelCase one is present but empty', () => {
    const r = normalizeAzureIdentity({ metadata: meta, spec: { resourceID: '', ResourceID: RID } });
    expect(r.value?.resourceID).toBe(RID);
    expect(r.legacyFields).toEqual(['spec.ResourceID']);
  });

  it('does not report an identical duplicate as a conflict', () => {
    const r = normalizeAzureIdentity({ metadata: meta, spec: { clientID: CLIENT, ClientID: CLIENT } });
    expect(r.problems).toEqual([]);
    expect(r.legacyFields).toEqual([]);
  });

  it('treats a missing type as 0 (Go zero value) and reads "1" from pre-schema YAML with a note', () => {
    expect(normalizeAzureIdentity({ metadata: meta, spec: {} }).value?.type).toBe(0);
    const r = normalizeAzureIdentity({ metadata: meta, spec: { type: '1' } });
    expect(r.value?.type).toBe(1);
    expect(r.problems).toEqual(['spec.type is the string "1"; read as the integer 1']);
  });

  it.each([
    [7, 'number 7'],
    [1.5, 'number 1.5'],
    [-1, 'number -1'],
    ['abc', '"abc"'],
    [true, 'boolean true'],
    [[0], 'a list'],
    [{}, 'an object'],
  ])('marks type %j invalid instead of guessing', (type, text) => {
    const r = normalizeAzureIdentity({ metadata: meta, spec: { type } });
    expect(r.value?.type).toBeNull();
    expect(r.value?.invalidType).toBe(text);
  });

  it('reads the namespaced annotation only with the exact key and value', () => {
    const with_ = (annotations: Record<string, string>) =>
      normalizeAzureIdentity({ metadata: { ...meta, annotations }, spec: {} }).value?.namespaced;
    expect(with_({ 'aadpodidentity.k8s.io/Behavior': 'namespaced' })).toBe(true);
    expect(with_({ 'aadpodidentity.k8s.io/behavior': 'namespaced' })).toBe(false);
    expect(with_({ 'aadpodidentity.k8s.io/Behavior': 'Namespaced' })).toBe(false);
  });

  it('gives reasons instead of throwing on garbage', () => {
    for (const raw of [null, undefined, 42, 'x', [], {}, { metadata: null }, { metadata: { name: 5 } }]) {
      const r = normalizeAzureIdentity(raw);
      expect(r.value).toBeNull();
      expect(r.problems.length).toBeGreaterThan(0);
    }
  });

  it('empties fields of the wrong type and reports each', () => {
    const r = normalizeAzureIdentity({
      metadata: { ...meta, labels: { ok: 'v', bad: 3 } },
      spec: {
        resourceID: 12,
        clientID: ['a'],
        clientPassword: 'secret',
        tenantID: { x: 1 },
        auxiliaryTenantIDs: ['t', 4, null],
      },
    });
    expect(r.value).toMatchObject({
      resourceID: '',
      clientID: '',
      clientPassword: null,
      tenantID: '',
      auxiliaryTenantIDs: ['t'],
      labels: { ok: 'v' },
    });
    expect(r.problems).toEqual([
      'metadata.labels.bad must be a string, got number 3',
      'spec.resourceID must be a string, got number 12',
      'spec.clientID must be a string, got a list',
      'spec.clientPassword must be an object, got "secret"',
      'spec.tenantID must be a string, got an object',
      'spec.auxiliaryTenantIDs[1] must be a string, got number 4',
      'spec.auxiliaryTenantIDs[2] must be a string, got null',
    ]);
  });

  it('treats a null spec and null auxiliaryTenantIDs as empty', () => {
    const r = normalizeAzureIdentity({ metadata: meta, spec: null });
    expect(r.value).toMatchObject({ type: 0, auxiliaryTenantIDs: [] });
    expect(r.problems).toEqual([]);
    expect(normalizeAzureIdentity({ metadata: meta, spec: { auxiliaryTenantIDs: null } }).problems).toEqual([]);
  });

  it('reads timestamps given as Date objects (client-node list results) and deletion', () => {
    const r = normalizeAzureIdentity({
      metadata: { ...meta, creationTimestamp: new Date('2024-01-02T03:04:05Z'), deletionTimestamp: new Date(), finalizers: ['f', 1] },
      spec: {},
    });
    expect(r.value).toMatchObject({ creationTimestamp: '2024-01-02T03:04:05Z', deleting: true, finalizers: ['f'] });
  });
});

describe('normalizeBinding', () => {
  it('reads camelCase and legacy spellings, camelCase winning', () => {
    expect(normalizeBinding({ metadata: meta, spec: { azureIdentity: 'id', selector: 'sel', weight: 3 } })).toEqual({
      value: expect.objectContaining({ azureIdentity: 'id', selector: 'sel', weight: 3 }),
      legacyFields: [],
      problems: [],
    });
    const legacy = normalizeBinding({ metadata: meta, spec: { AzureIdentity: 'id', Selector: 'sel', Weight: 1 } });
    expect(legacy.value).toMatchObject({ azureIdentity: 'id', selector: 'sel', weight: 1 });
    expect(legacy.legacyFields).toEqual(['spec.AzureIdentity', 'spec.Selector', 'spec.Weight']);
    const both = normalizeBinding({ metadata: meta, spec: { selector: 'new', Selector: 'old' } });
    expect(both.value?.selector).toBe('new');
    expect(both.problems).toEqual(['spec.Selector ignored: spec.selector is set']);
  });

  it('defaults weight to null and reports a non-integer weight', () => {
    expect(normalizeBinding({ metadata: meta, spec: {} }).value?.weight).toBeNull();
    const r = normalizeBinding({ metadata: meta, spec: { weight: 'heavy' } });
    expect(r.value?.weight).toBeNull();
    expect(r.problems).toEqual(['spec.weight must be an integer, got "heavy"']);
  });

  it('reads a capitalised top-level Spec written by very old versions', () => {
    const r = normalizeBinding({ metadata: meta, Spec: { AzureIdentity: 'id', Selector: 's' } });
    expect(r.value).toMatchObject({ azureIdentity: 'id', selector: 's' });
    expect(r.legacyFields).toContain('Spec');
  });
});

describe('normalizeException', () => {
  it('reads podLabels and PodLabels, camelCase winning', () => {
    expect(normalizeException({ metadata: meta, spec: { podLabels: { app: 'mic' } } }).value?.podLabels).toEqual({ app: 'mic' });
    const legacy = normalizeException({ metadata: meta, spec: { PodLabels: { app: 'mic' } } });
    expect(legacy.value?.podLabels).toEqual({ app: 'mic' });
    expect(legacy.legacyFields).toEqual(['spec.PodLabels']);
    const both = normalizeException({ metadata: meta, spec: { podLabels: { a: '1' }, PodLabels: { b: '2' } } });
    expect(both.value?.podLabels).toEqual({ a: '1' });
  });

  it('drops non-string label values with a reason', () => {
    const r = normalizeException({ metadata: meta, spec: { podLabels: { a: 1, b: 'x' } } });
    expect(r.value?.podLabels).toEqual({ b: 'x' });
    expect(r.problems).toEqual(['spec.podLabels.a must be a string, got number 1']);
    expect(normalizeException({ metadata: meta, spec: { podLabels: ['a'] } }).value?.podLabels).toEqual({});
  });
});

describe('normalizeAssignedIdentity', () => {
  const identity = { apiVersion: 'aadpodidentity.k8s.io/v1', kind: 'AzureIdentity', metadata: { name: 'id', namespace: 'ns1', resourceVersion: '3' }, spec: { type: 0, resourceID: RID, clientID: CLIENT } };
  const binding = { metadata: { name: 'b', namespace: 'ns1' }, spec: { azureIdentity: 'id', selector: 'sel' } };

  it('reads what MIC writes', () => {
    const r = normalizeAssignedIdentity({
      metadata: { name: 'pod-ns1-id', namespace: 'default', labels: { nodename: 'n1' }, finalizers: ['azureassignedidentity.finalizers.aadpodidentity.k8s.io'] },
      spec: { azureIdentityRef: identity, azureBindingRef: binding, pod: 'pod', podNamespace: 'ns1', nodename: 'n1' },
      status: { status: 'Assigned', availableReplicas: 1 },
    });
    expect(r.problems).toEqual([]);
    expect(r.value).toMatchObject({
      name: 'pod-ns1-id',
      namespace: 'default',
      pod: 'pod',
      podNamespace: 'ns1',
      nodeName: 'n1',
      state: 'Assigned',
      finalizers: ['azureassignedidentity.finalizers.aadpodidentity.k8s.io'],
      identityRef: { name: 'id', resourceVersion: '3', resourceID: RID, clientID: CLIENT, type: 0 },
      bindingRef: { name: 'b', selector: 'sel', azureIdentity: 'id' },
    });
  });

  it('reads an object stored by an old MIC (lower-case tags, capitalised Status) and says which keys it used', () => {
    const r = normalizeAssignedIdentity({
      metadata: { name: 'old', namespace: 'default' },
      spec: {
        azureidentityref: { metadata: { name: 'id' }, spec: { resourceid: RID, clientid: CLIENT } },
        azurebindingref: { metadata: { name: 'b' }, spec: { azureidentity: 'id', selector: 'sel' } },
        Pod: 'p',
        podnamespace: 'ns1',
        NodeName: 'n1',
      },
      Status: { Status: 'Created' },
    });
    expect(r.value).toMatchObject({ pod: 'p', podNamespace: 'ns1', nodeName: 'n1', state: 'Created' });
    expect(r.value?.identityRef).toMatchObject({ resourceID: RID, clientID: CLIENT });
    expect(r.value?.bindingRef).toMatchObject({ azureIdentity: 'id', selector: 'sel' });
    expect(r.legacyFields).toEqual(
      expect.arrayContaining([
        'spec.azureidentityref',
        'spec.azureidentityref.spec.resourceid',
        'spec.azurebindingref.spec.azureidentity',
        'spec.Pod',
        'spec.podnamespace',
        'spec.NodeName',
        'Status',
        'Status.Status',
      ]),
    );
  });

  it("keeps the original's empty state for old objects, and fails closed on no status or an unknown state", () => {
    expect(normalizeAssignedIdentity({ metadata: meta, spec: {}, status: {} }).value?.state).toBe('');
    expect(normalizeAssignedIdentity({ metadata: meta, spec: {}, status: { status: '', availableReplicas: 0 } }).value?.state).toBe('');
    // Just created through the main resource: the status subresource dropped status, nothing is assigned yet.
    expect(normalizeAssignedIdentity({ metadata: meta, spec: {} }).value?.state).toBe('Created');
    expect(normalizeAssignedIdentity({ metadata: meta, spec: {}, status: null }).value?.state).toBe('Created');
    const r = normalizeAssignedIdentity({ metadata: meta, spec: {}, status: { status: 'Weird' } });
    expect(r.value?.state).toBe('Created');
    expect(r.problems).toContain('status.status "Weird" is not Created, Assigned or Unassigned; treated as Created');
  });

  it('reports missing or broken refs without throwing', () => {
    const r = normalizeAssignedIdentity({ metadata: meta, spec: { azureIdentityRef: 'nope', azureBindingRef: [] } });
    expect(r.value).toMatchObject({ identityRef: null, bindingRef: null });
    expect(r.problems).toEqual(
      expect.arrayContaining([
        'spec.azureIdentityRef is missing or has no metadata.name',
        'spec.azureBindingRef is missing or has no metadata.name',
      ]),
    );
  });
});

describe('equalIgnoringCase (the legacy-key fold, allocation-free for ASCII)', () => {
  it('agrees with comparing toLowerCase() on random keys, ASCII or not', () => {
    const alphabet = ['a', 'A', 'z', 'Z', 'k', 'K', '\u212a', 'i', 'I', '\u0130', 's', 'S', '\u017f', '\u00df', '_', '0', '@', '['];
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % n);
    const word = (len: number) => Array.from({ length: len }, () => alphabet[rand(alphabet.length)]).join('');
    let agreedTrue = 0;
    for (let i = 0; i < 20_000; i++) {
      const len = 1 + rand(6);
      const a = word(len);
      // Half the time b is a case variant of a, so equal pairs are common.
      const b = rand(2) === 0 ? [...a].map((c) => (rand(2) === 0 ? c.toUpperCase() : c.toLowerCase())).join('') : word(len);
      if (a.length !== b.length) continue;
      const expected = a.toLowerCase() === b.toLowerCase();
      expect(equalIgnoringCase(a, b), `${JSON.stringify(a)} ~ ${JSON.stringify(b)}`).toBe(expected);
      if (expected) agreedTrue++;
    }
    expect(agreedTrue).toBeGreaterThan(1000);
    expect(equalIgnoringCase('ClientID', 'clientid')).toBe(true);
    expect(equalIgnoringCase('clientId', 'clientIE')).toBe(false);
    expect(equalIgnoringCase('[', '{')).toBe(false); // 0x5b and 0x7b differ by 0x20 but are not letters
  });
});
