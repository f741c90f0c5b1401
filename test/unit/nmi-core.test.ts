import { describe, expect, it } from 'vitest';
import { routeRequest, normalisePath } from '../../src/nmi/core/routes.js';
import { parseTokenRequest } from '../../src/nmi/core/token-request.js';
import { isMicPod, principalKey, selectIdentity, servableIdentities, type SelectInput, type SelectPolicy } from '../../src/nmi/core/select.js';
import { imdsTokenBody } from '../../src/nmi/core/imds-body.js';
import type {
  AzureAssignedIdentity,
  AzureIdentity,
  AzureIdentityBinding,
  AzurePodIdentityException,
  PodView,
} from '../../src/crds/types.js';

const open = { blockInstanceMetadata: false };
const blocking = { blockInstanceMetadata: true };

describe('routeRequest', () => {
  it.each([
    '/metadata/identity/oauth2/token',
    '/metadata/identity/oauth2/token/',
    '/Metadata/identity/oauth2/token',
    '/METADATA/identity/oauth2/token/',
  ])('sends %s to the token handler', (path) => {
    expect(routeRequest(path, open)).toEqual({ kind: 'token' });
  });

  it.each([
    '/metadata/identity\\oauth2\\token/',
    '/metadata/identity/\\oauth2\\token',
    '/metadata/identity%5Coauth2%5Ctoken',
    '/metadata/identity%255Coauth2%255Ctoken',
    '/metadata/Identity/oauth2/token',
    '/metadata/identity/OAuth2/token',
    '/metadata/identity/oauth2/token/../token',
    '/metadata//identity/oauth2/token',
    '//metadata/identity/oauth2/token',
    '/metadata/./identity/oauth2/token',
    '/metadata/identity/oauth2/tokenx',
    '/metadata/identity/oauth2/token/extra',
    '/x/../metadata/identity/oauth2/token',
    '/metadata/identity%2Foauth2%2Ftoken',
    '/%6detadata/identity/oauth2/token',
  ])('refuses the look-alike %s instead of proxying it', (path) => {
    expect(routeRequest(path, open).kind).toBe('invalid');
  });

  it.each([
    '/metadata/identity/oauth2/token/..',
    '/metadata/identity/oauth2/token/%2e%2e',
    '/metadata/identity/oauth2/token/%252e%252e',
    '/metadata/instance/../identity/oauth2/token',
    '/metadata/versions/.',
  ])('refuses the dot-segment path %s', (path) => {
    expect(routeRequest(path, open).kind).toBe('invalid');
  });

  it.each(['/metadata/identity/issuecredential', '/metadata/identity/getplatformmetadata', '/metadata/identity', '/Metadata/Identity/info'])(
    'never proxies the other identity endpoint %s',
    (path) => {
      expect(routeRequest(path, open).kind).toBe('invalid');
    },
  );

  it('refuses a path with broken percent-encoding', () => {
    expect(routeRequest('/metadata/%E0%A4%A/x', open).kind).toBe('invalid');
  });

  it('routes /host/token to the host handler', () => {
    expect(routeRequest('/host/token', open)).toEqual({ kind: 'host-token' });
    expect(routeRequest('/host/token/', open)).toEqual({ kind: 'host-token' });
    expect(routeRequest('/host/tokens', open)).toEqual({ kind: 'proxy' });
  });

  it('blocks instance metadata in every spelling only when asked', () => {
    for (const path of ['/metadata/instance', '/Metadata/Instance/compute', '/metadata//instance', '/metadata/%69nstance']) {
      expect(routeRequest(path, blocking)).toEqual({ kind: 'instance-blocked' });
      expect(routeRequest(path, open)).toEqual({ kind: 'proxy' });
    }
  });

  it('proxies everything else', () => {
    expect(routeRequest('/metadata/versions', blocking)).toEqual({ kind: 'proxy' });
    expect(routeRequest('/doesnotexist', blocking)).toEqual({ kind: 'proxy' });
  });

  it('normalises dot segments, slashes, backslashes and case', () => {
    expect(normalisePath('/A//b\\.\\c/../D/')).toBe('/a/b/d/');
  });
});

describe('parseTokenRequest', () => {
  it('reads resource, client_id, msi_res_id and mi_res_id', () => {
    expect(parseTokenRequest('api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&client_id=abc')).toEqual({
      ok: true,
      request: { resource: 'https://vault.azure.net', clientId: 'abc' },
    });
    expect(parseTokenRequest('resource=r&msi_res_id=%2Fsubscriptions%2Fs')).toEqual({
      ok: true,
      request: { resource: 'r', resourceId: '/subscriptions/s' },
    });
    expect(parseTokenRequest('resource=r&mi_res_id=%2Fsubscriptions%2Fs')).toEqual({
      ok: true,
      request: { resource: 'r', resourceId: '/subscriptions/s' },
    });
  });

  it.each([
    ['', 'parameter resource cannot be empty'],
    ['resource=', 'parameter resource cannot be empty'],
    ['resource=a&resource=b', 'parameter resource is given more than once'],
    ['resource=a&client_id=x&client_id=y', 'parameter client_id is given more than once'],
    ['resource=a&client_id=x&msi_res_id=y', 'only one of client_id, msi_res_id/mi_res_id and object_id may be given'],
    ['resource=a&client_id=x&object_id=y', 'only one of client_id, msi_res_id/mi_res_id and object_id may be given'],
    ['resource=a&object_id=x&object_id=y', 'parameter object_id is given more than once'],
    ['resource=a&msi_res_id=x&mi_res_id=y', 'msi_res_id and mi_res_id name different identities'],
    ['resource=a&principal_id=x', 'parameter principal_id is not supported: use client_id, msi_res_id or object_id'],
    ['resource=a%0Ab', 'parameter resource contains control characters'],
  ])('refuses %j with %s', (query, reason) => {
    expect(parseTokenRequest(query)).toEqual({ ok: false, status: 400, reason });
  });
});

describe('imdsTokenBody', () => {
  it('renders numbers as strings and echoes the resource exactly', () => {
    expect(imdsTokenBody({ accessToken: 't', expiresOn: 2_000, notBefore: 900 }, 'https://r', 1_000)).toEqual({
      access_token: 't',
      refresh_token: '',
      expires_in: '1000',
      expires_on: '2000',
      not_before: '900',
      resource: 'https://r',
      token_type: 'Bearer',
    });
  });
});

// ---------------------------------------------------------------------------------------------- selectIdentity

const meta = (namespace: string, name: string) => ({
  namespace,
  name,
  uid: `${namespace}-${name}`,
  resourceVersion: '1',
  labels: {},
  annotations: {},
  creationTimestamp: '',
  finalizers: [],
  deleting: false,
});

function identity(namespace: string, name: string, clientID: string, extra: Partial<AzureIdentity> = {}): AzureIdentity {
  return {
    ...meta(namespace, name),
    type: 0,
    invalidType: '',
    resourceID: `/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}`,
    clientID,
    clientPassword: null,
    tenantID: '',
    auxiliaryTenantIDs: [],
    adEndpoint: '',
    adResourceID: '',
    namespaced: false,
    ...extra,
  };
}

function assigned(pod: PodView, id: AzureIdentity, state: AzureAssignedIdentity['state']): AzureAssignedIdentity {
  return {
    ...meta('default', `${pod.name}-${pod.namespace}-${id.name}`),
    identityRef: id,
    bindingRef: null,
    pod: pod.name,
    podNamespace: pod.namespace,
    nodeName: pod.nodeName,
    state,
    podUid: '',
  };
}

function pod(namespace: string, name: string, labels: Record<string, string> = {}): PodView {
  return {
    namespace,
    name,
    uid: `uid-${name}`,
    resourceVersion: '1',
    labels,
    nodeName: 'node-a',
    podIP: '10.0.0.5',
    podIPs: ['10.0.0.5'],
    phase: 'Running',
    hostNetwork: false,
    deleting: false,
    ownerReferences: [],
  };
}

const standard: SelectPolicy = { mode: 'standard', forceNamespaced: false, micNamespace: 'aad-pod-identity', micServiceAccount: 'aad-pod-identity-mic' };
const managed: SelectPolicy = { mode: 'managed', forceNamespaced: true, micNamespace: 'aad-pod-identity', micServiceAccount: 'aad-pod-identity-mic' };

function input(p: PodView, extra: Partial<SelectInput>): SelectInput {
  return { pod: p, request: {}, exceptions: [], assigned: [], bindings: [], identities: [], ...extra };
}

describe('selectIdentity in standard mode', () => {
  const p = pod('apps', 'web', { aadpodidbinding: 'web' });
  const a = identity('default', 'id-a', 'AAAA-1111');
  const b = identity('default', 'id-b', 'bbbb-2222');

  it('is pending with nothing assigned, and says no AAI exists', () => {
    expect(selectIdentity(input(p, {}), standard)).toMatchObject({ kind: 'pending', created: false });
  });

  it('is pending while the only AAI is Created', () => {
    expect(selectIdentity(input(p, { assigned: [assigned(p, a, 'Created')] }), standard)).toMatchObject({
      kind: 'pending',
      created: true,
    });
  });

  it('serves an Assigned identity and the legacy empty state', () => {
    expect(selectIdentity(input(p, { assigned: [assigned(p, a, 'Assigned')] }), standard)).toMatchObject({
      kind: 'identity',
      identity: { name: 'id-a' },
    });
    expect(selectIdentity(input(p, { assigned: [assigned(p, a, '')] }), standard)).toMatchObject({
      kind: 'identity',
      identity: { name: 'id-a' },
    });
  });

  it('never serves another pod’s AAI', () => {
    const other = pod('apps', 'other');
    expect(selectIdentity(input(p, { assigned: [assigned(other, a, 'Assigned')] }), standard).kind).toBe('pending');
    const sameNameOtherNs = pod('team2', 'web');
    expect(selectIdentity(input(p, { assigned: [assigned(sameNameOtherNs, a, 'Assigned')] }), standard).kind).toBe(
      'pending',
    );
  });

  it('matches client_id and msi_res_id case-insensitively and waits on a mismatch', () => {
    const aais = [assigned(p, a, 'Assigned'), assigned(p, b, 'Assigned')];
    expect(selectIdentity(input(p, { assigned: aais, request: { clientId: 'bbbb-2222' } }), standard)).toMatchObject({
      identity: { name: 'id-b' },
    });
    expect(selectIdentity(input(p, { assigned: aais, request: { clientId: 'aaaa-1111' } }), standard)).toMatchObject({
      identity: { name: 'id-a' },
    });
    expect(
      selectIdentity(input(p, { assigned: aais, request: { resourceId: b.resourceID.toUpperCase() } }), standard),
    ).toMatchObject({ identity: { name: 'id-b' } });
    expect(selectIdentity(input(p, { assigned: aais, request: { clientId: 'nope' } }), standard)).toMatchObject({
      kind: 'pending',
      created: false,
    });
  });

  it('picks the same identity every time when several are assigned and none is requested', () => {
    const first = selectIdentity(input(p, { assigned: [assigned(p, b, 'Assigned'), assigned(p, a, 'Assigned')] }), standard);
    const second = selectIdentity(input(p, { assigned: [assigned(p, a, 'Assigned'), assigned(p, b, 'Assigned')] }), standard);
    expect(first).toMatchObject({ identity: { name: 'id-a' } });
    expect(second).toMatchObject({ identity: { name: 'id-a' } });
  });

  it('drops identities from other namespaces in forced namespaced mode or with the annotation', () => {
    const aais = [assigned(p, a, 'Assigned')];
    expect(selectIdentity(input(p, { assigned: aais }), { ...standard, forceNamespaced: true }).kind).toBe('pending');
    const annotated = identity('default', 'id-n', 'cccc', { namespaced: true });
    expect(selectIdentity(input(p, { assigned: [assigned(p, annotated, 'Assigned')] }), standard).kind).toBe('pending');
    const local = identity('apps', 'id-local', 'dddd', { namespaced: true });
    expect(selectIdentity(input(p, { assigned: [assigned(p, local, 'Assigned')] }), standard)).toMatchObject({
      identity: { name: 'id-local' },
    });
  });

  it('serves an AAI only to the pod incarnation it was made for, and legacy AAIs without a uid to any', () => {
    const mine = { ...assigned(p, a, 'Assigned'), podUid: p.uid };
    expect(selectIdentity(input(p, { assigned: [mine] }), standard)).toMatchObject({ kind: 'identity' });
    const predecessor = { ...assigned(p, a, 'Assigned'), podUid: 'uid-of-the-deleted-pod' };
    expect(selectIdentity(input(p, { assigned: [predecessor] }), standard).kind).toBe('pending');
    expect(selectIdentity(input(p, { assigned: [assigned(p, a, 'Assigned')] }), standard)).toMatchObject({ kind: 'identity' });
  });

  it('ignores AAIs being deleted', () => {
    const dying = { ...assigned(p, a, 'Assigned'), deleting: true };
    expect(selectIdentity(input(p, { assigned: [dying] }), standard).kind).toBe('pending');
  });
});

describe('selectIdentity exceptions', () => {
  const exception = (namespace: string, podLabels: Record<string, string>): AzurePodIdentityException => ({
    ...meta(namespace, 'exc'),
    podLabels,
  });

  it('sends an excepted pod to the node identity with the requested client id', () => {
    const p = pod('apps', 'job', { app: 'Custom' });
    expect(
      selectIdentity(input(p, { exceptions: [exception('apps', { app: 'custom' })], request: { clientId: 'c1' } }), standard),
    ).toMatchObject({ kind: 'node', clientId: 'c1' });
  });

  it('ignores exceptions from other namespaces and non-matching labels', () => {
    const p = pod('apps', 'job', { app: 'custom' });
    expect(selectIdentity(input(p, { exceptions: [exception('other', { app: 'custom' })] }), standard).kind).toBe(
      'pending',
    );
    expect(selectIdentity(input(p, { exceptions: [exception('apps', { app: 'else' })] }), standard).kind).toBe('pending');
  });

  it('treats a pod running as MIC’s ServiceAccount in MIC’s namespace as MIC, and nothing else', () => {
    const mic = { ...pod('aad-pod-identity', 'mic-abc'), serviceAccountName: 'aad-pod-identity-mic' };
    expect(selectIdentity(input(mic, {}), standard).kind).toBe('node');
    // The same ServiceAccount name in another namespace is another ServiceAccount.
    expect(selectIdentity(input({ ...mic, namespace: 'apps' }, {}), standard).kind).toBe('pending');
    // The original's heuristic: a hand-written controller reference to a ReplicaSet named mic-*, in MIC's namespace.
    const forged = {
      ...pod('aad-pod-identity', 'mic-5d9f-x'),
      serviceAccountName: 'default',
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'mic-5d9f', uid: 'u', controller: true }],
    };
    expect(selectIdentity(input(forged, {}), standard).kind).toBe('pending');
    expect(selectIdentity(input({ ...forged, serviceAccountName: undefined }, {}), standard).kind).toBe('pending');
    // No MIC namespace configured: nobody is MIC, whatever its ServiceAccount.
    expect(selectIdentity(input(mic, {}), { ...standard, micNamespace: '' }).kind).toBe('pending');
    expect(isMicPod({ ...mic, namespace: '' }, { micNamespace: '', micServiceAccount: 'aad-pod-identity-mic' })).toBe(false);
  });
});

describe('selectIdentity in managed mode', () => {
  const p = pod('apps', 'web', { aadpodidbinding: 'web' });
  const binding = (namespace: string, name: string, azureIdentity: string, selector: string): AzureIdentityBinding => ({
    ...meta(namespace, name),
    azureIdentity,
    selector,
    weight: null,
  });

  it('finds the identity through a binding in the pod namespace', () => {
    const id = identity('apps', 'id-a', 'a1');
    expect(
      selectIdentity(input(p, { bindings: [binding('apps', 'b', 'id-a', 'web')], identities: [id] }), managed),
    ).toMatchObject({ kind: 'identity', identity: { name: 'id-a' } });
  });

  it('answers none at once for bindings or identities in another namespace', () => {
    const id = identity('other', 'id-a', 'a1');
    expect(
      selectIdentity(input(p, { bindings: [binding('other', 'b', 'id-a', 'web')], identities: [id] }), managed).kind,
    ).toBe('none');
  });

  it('answers none for a pod without the label', () => {
    expect(selectIdentity(input(pod('apps', 'x'), {}), managed).kind).toBe('none');
  });
});

describe('selectIdentity: settled assignments answer as IMDS does', () => {
  const WINDOW = 80_000;
  const settling: SelectPolicy = { ...standard, settleAfterMs: WINDOW };
  const T0 = Date.parse('2026-12-01T10:00:00Z');
  const young = { ...pod('apps', 'web', { aadpodidbinding: 'web' }), startedAtMs: T0 };
  const a = identity('apps', 'id-a', 'aaaaaaaa-1111-4111-8111-111111111111');
  const b = identity('apps', 'id-b', 'bbbbbbbb-2222-4222-8222-222222222222');
  const bindingTo = (id: AzureIdentity, selector = 'web'): AzureIdentityBinding => ({
    ...meta(id.namespace, `${id.name}-binding`),
    azureIdentity: id.name,
    selector,
    weight: null,
  });
  const assignedVia = (p: PodView, id: AzureIdentity, state: AzureAssignedIdentity['state']): AzureAssignedIdentity => ({
    ...assigned(p, id, state),
    bindingRef: bindingTo(id),
  });
  const view = (extra: Partial<SelectInput>): SelectInput =>
    input(young, { viewComplete: true, nowMs: T0 + 1_000, podBindings: [], ...extra });

  it('refuses at once an unbound client_id once MIC is done with a young pod (its only binding Assigned)', () => {
    const sel = selectIdentity(
      view({ request: { clientId: b.clientID }, assigned: [assignedVia(young, a, 'Assigned')], podBindings: [{ binding: bindingTo(a), identity: a }] }),
      settling,
    );
    expect(sel.kind).toBe('unbound');
  });

  it('keeps waiting for a young pod while a binding that could give the asked identity has no Assigned AAI', () => {
    const podBindings = [{ binding: bindingTo(a), identity: a }, { binding: bindingTo(b), identity: b }];
    const sel = selectIdentity(view({ request: { clientId: b.clientID }, assigned: [assignedVia(young, a, 'Assigned')], podBindings }), settling);
    expect(sel).toMatchObject({ kind: 'pending', created: false });
    // ... even once the pod is old: that binding's assignment may still come.
    const old = selectIdentity(
      view({ request: { clientId: b.clientID }, assigned: [assignedVia(young, a, 'Assigned')], podBindings, nowMs: T0 + WINDOW }),
      settling,
    );
    expect(old.kind).toBe('pending');
  });

  it('does not wait for a binding whose AzureIdentity MIC cannot use (it never assigns it)', () => {
    const broken = identity('apps', 'id-b', 'not-a-guid');
    const podBindings = [{ binding: bindingTo(a), identity: a }, { binding: bindingTo(broken), identity: broken }];
    const sel = selectIdentity(view({ request: { clientId: 'not-a-guid' }, assigned: [assignedVia(young, a, 'Assigned')], podBindings, nowMs: T0 + WINDOW }), settling);
    expect(sel.kind).toBe('unbound');
  });

  it('keeps waiting while a binding names an AzureIdentity that is not there yet', () => {
    const sel = selectIdentity(
      view({ request: { clientId: b.clientID }, assigned: [assignedVia(young, a, 'Assigned')], podBindings: [{ binding: bindingTo(a), identity: a }, { binding: bindingTo(b), identity: undefined }], nowMs: T0 + WINDOW }),
      settling,
    );
    expect(sel.kind).toBe('pending');
  });

  it('waits for a pod with no binding label while it is young, and refuses it once it is past the window', () => {
    const unlabelled = { ...young, labels: {} };
    expect(selectIdentity({ ...view({}), pod: unlabelled }, settling).kind).toBe('pending');
    expect(selectIdentity({ ...view({ nowMs: T0 + WINDOW - 1 }), pod: unlabelled }, settling).kind).toBe('pending');
    expect(selectIdentity({ ...view({ nowMs: T0 + WINDOW }), pod: unlabelled }, settling).kind).toBe('unbound');
  });

  it('keeps the original’s wait and 404 for a labelled pod with no identity at all, however old: its binding may come', () => {
    expect(selectIdentity(view({ nowMs: T0 + 10 * WINDOW }), settling)).toMatchObject({ kind: 'pending', created: false });
    expect(selectIdentity(view({ request: { clientId: b.clientID }, nowMs: T0 + 10 * WINDOW }), settling).kind).toBe('pending');
  });

  it('never settles before every informer has listed, nor without the pod age or bindings', () => {
    const base = { request: { clientId: b.clientID }, assigned: [assignedVia(young, a, 'Assigned')], nowMs: T0 + WINDOW };
    expect(selectIdentity(view({ ...base, viewComplete: false }), settling).kind).toBe('pending');
    expect(selectIdentity(input(young, { ...base, viewComplete: true }), settling).kind).toBe('pending');
    expect(selectIdentity(view({ ...base, nowMs: T0 + 1 }), standard).kind).toBe('unbound'); // MIC done: no age needed
    expect(selectIdentity(view({ request: {}, nowMs: T0 + 1 }), standard).kind).toBe('pending'); // nothing: age needed
  });

  it('still waits (Created) rather than refusing while the asked identity is being attached', () => {
    const sel = selectIdentity(view({ request: { clientId: a.clientID }, assigned: [assignedVia(young, a, 'Created')], podBindings: [{ binding: bindingTo(a), identity: a }], nowMs: T0 + WINDOW }), settling);
    expect(sel).toMatchObject({ kind: 'pending', created: true });
  });

  it('matches object_id only by a principal ID read from the identity’s own token', () => {
    const aais = [assignedVia(young, a, 'Assigned')];
    const podBindings = [{ binding: bindingTo(a), identity: a }];
    const principalIds = new Map([[principalKey(a), 'oid-a']]);
    expect(selectIdentity(view({ request: { objectId: 'OID-A' }, assigned: aais, podBindings, principalIds }), settling)).toMatchObject({
      kind: 'identity',
      identity: { name: 'id-a' },
    });
    expect(selectIdentity(view({ request: { objectId: 'oid-b' }, assigned: aais, podBindings, principalIds }), settling).kind).toBe('unbound');
    // Not known yet for an identity still being assigned: it may be the one.
    const later = [{ binding: bindingTo(a), identity: a }, { binding: bindingTo(b), identity: b }];
    expect(selectIdentity(view({ request: { objectId: 'oid-b' }, assigned: aais, podBindings: later, principalIds }), settling).kind).toBe('pending');
    expect(servableIdentities(view({ assigned: [...aais, assignedVia(young, b, 'Created')] }), settling).map((i) => i.name)).toEqual(['id-a']);
  });

  it('managed mode: refuses an unbound client_id at once when the pod has an identity, keeps 404 for a labelled pod with none', () => {
    const m: SelectPolicy = { ...managed, settleAfterMs: WINDOW };
    const bindings = [bindingTo(a)];
    expect(selectIdentity(view({ request: { clientId: b.clientID }, bindings, identities: [a] }), m).kind).toBe('unbound');
    expect(selectIdentity(view({ request: { clientId: b.clientID }, bindings: [], identities: [] }), m).kind).toBe('none');
    expect(selectIdentity(view({ request: { clientId: b.clientID }, bindings: [], identities: [], nowMs: T0 + WINDOW }), m).kind).toBe('none');
    expect(selectIdentity({ ...view({ request: { clientId: b.clientID }, nowMs: T0 + WINDOW }), pod: { ...young, labels: {} } }, m).kind).toBe('unbound');
    expect(selectIdentity({ ...view({ request: { clientId: b.clientID }, nowMs: T0 + 1 }), pod: { ...young, labels: {} } }, m).kind).toBe('none');
    // A binding naming an identity not there yet: not settled.
    expect(selectIdentity(view({ request: { clientId: b.clientID }, bindings: [bindingTo(a), bindingTo(b)], identities: [a] }), m).kind).toBe('none');
  });
});
