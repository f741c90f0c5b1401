// spec.mode against the API emulator, which admits custom resources by the CRD schemas in config/crd as a real
// API server does: the original's manifests stay valid, Federated is kept, anything else is refused with the
// server's wording; and a cluster still on the original's AzureAssignedIdentity CRD accepts our AAIs.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalizeAzureIdentity } from '../../src/crds/normalize.js';
import { CRD_DIR, startTestApiServer, upgradedClusterCrdDir, type TestApiServer } from '../helpers/apiserver.js';

const GROUP = 'aadpodidentity.k8s.io';
const RID = '/subscriptions/sub/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1';
const CLIENT = '11111111-2222-3333-4444-555555555555';

const identity = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: `${GROUP}/v1`,
  kind: 'AzureIdentity',
  metadata: { name, namespace: 'default' },
  spec,
});

describe('AzureIdentity spec.mode on the API emulator', () => {
  let world: TestApiServer;
  let custom: k8s.CustomObjectsApi;
  const create = (body: object) =>
    custom.createNamespacedCustomObject({ group: GROUP, version: 'v1', namespace: 'default', plural: 'azureidentities', body });

  beforeAll(async () => {
    world = await startTestApiServer({ crdDir: CRD_DIR });
    custom = world.kc.makeApiClient(k8s.CustomObjectsApi);
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('accepts an original manifest without mode, and reads it as Attached', async () => {
    const stored = await create(identity('plain', { type: 0, resourceID: RID, clientID: CLIENT }));
    expect(stored.spec).not.toHaveProperty('mode');
    expect(normalizeAzureIdentity(stored).value?.mode).toBe('Attached');
  });

  it('accepts a legacy capitalised manifest unchanged', async () => {
    const stored = await create(identity('legacy', { Type: 0, ResourceID: RID, ClientID: CLIENT }));
    expect(stored.spec).toEqual({ Type: 0, ResourceID: RID, ClientID: CLIENT });
  });

  it('keeps mode Federated', async () => {
    const stored = await create(identity('fed', { type: 0, resourceID: RID, clientID: CLIENT, mode: 'Federated' }));
    expect(stored.spec.mode).toBe('Federated');
    expect(normalizeAzureIdentity(stored).value?.mode).toBe('Federated');
  });

  it.each([['federated'], ['Projected']])('refuses mode %j with 422 and the supported values', async (mode) => {
    const err = await create(identity(`bad-${mode.toLowerCase()}`, { type: 0, resourceID: RID, clientID: CLIENT, mode })).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(k8s.ApiException);
    const apiErr = err as k8s.ApiException<string>;
    expect(apiErr.code).toBe(422);
    expect(String(apiErr.body)).toContain(`spec.mode: Unsupported value: \\"${mode}\\": supported values: \\"Attached\\", \\"Federated\\"`);
  });
});

describe('a cluster still on the original AzureAssignedIdentity CRD', () => {
  let world: TestApiServer;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const crds = await upgradedClusterCrdDir();
    cleanup = crds.cleanup;
    world = await startTestApiServer({ crdDir: crds.dir });
  });
  afterAll(async () => {
    await world?.stop();
    await cleanup?.();
  });

  it('accepts an AAI whose identity copy carries mode, pruning the field it does not know', async () => {
    const custom = world.kc.makeApiClient(k8s.CustomObjectsApi);
    const stored = await custom.createNamespacedCustomObject({
      group: GROUP,
      version: 'v1',
      namespace: 'default',
      plural: 'azureassignedidentities',
      body: {
        apiVersion: `${GROUP}/v1`,
        kind: 'AzureAssignedIdentity',
        metadata: { name: 'p-default-fed' },
        spec: {
          azureIdentityRef: identity('fed', { type: 0, resourceID: RID, clientID: CLIENT, mode: 'Federated' }),
          azureBindingRef: { apiVersion: `${GROUP}/v1`, kind: 'AzureIdentityBinding', metadata: { name: 'b', namespace: 'default' }, spec: { azureIdentity: 'fed', selector: 's' } },
          pod: 'p',
          podNamespace: 'default',
          nodename: 'n1',
        },
        status: { status: 'Created' },
      },
    });
    // The original's schema has no mode: the copy reads as Attached, so NMI must take the mode from the live AzureIdentity.
    expect(stored.spec.azureIdentityRef.spec).toEqual({ type: 0, resourceID: RID, clientID: CLIENT });
  });
});
