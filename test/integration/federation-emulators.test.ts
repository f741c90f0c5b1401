// The two emulators together, as federated mode will use them: the API emulator mints a pod-bound service-account
// token (TokenRequest), the Azure emulator's AAD fetches the cluster's issuer discovery over real HTTPS and exchanges
// the token for the identity's access token through a federated identity credential written with @azure/arm-msi.

import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeToken, emulatorAssertionCredential, startTestAzure, type TestAzure } from '../helpers/azure.js';
import { startTestApiServer, type TestApiServer } from '../helpers/apiserver.js';

const AUDIENCE = 'api://AzureADTokenExchange';
const VAULT = 'https://vault.azure.net/.default';

describe('federation across the emulators: TokenRequest → client_assertion → access token', () => {
  let kube: TestApiServer;
  let az: TestAzure;
  let core: k8s.CoreV1Api;

  beforeAll(async () => {
    [kube, az] = await Promise.all([startTestApiServer({ tls: true, token: 'fed-test' }), startTestAzure()]);
    // Azure AD must trust the cluster's issuer certificate, as it trusts a public one in Azure.
    az.emulator.trustIssuerCa(kube.server.caPem!);
    az.emulator.grantRole(az.servicePrincipal.objectId, 'Managed Identity Contributor', `/subscriptions/${az.emulator.subscriptionId}/resourceGroups/${az.resourceGroup}`);
    core = kube.kc.makeApiClient(k8s.CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'team-a' } } });
    for (const name of ['web', 'batch']) await core.createNamespacedServiceAccount({ namespace: 'team-a', body: { metadata: { name } } });
  }, 60_000);
  afterAll(async () => {
    await Promise.all([kube?.stop(), az?.stop()]);
  });

  const podToken = async (sa: string, pod: k8s.V1Pod): Promise<string> => {
    const out = await core.createNamespacedServiceAccountToken({
      namespace: 'team-a',
      name: sa,
      body: { spec: { audiences: [AUDIENCE], expirationSeconds: 600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata!.name, uid: pod.metadata!.uid } } },
    });
    return out.status!.token!;
  };

  it("exchanges a pod-bound token for the identity's access token, the credential naming the issuer exactly as discovery publishes it", async () => {
    const id = az.emulator.createUserAssignedIdentity(az.resourceGroup, 'fed-web');
    await az.msi().federatedIdentityCredentials.createOrUpdate(az.resourceGroup, id.name, 'aadpi-team-a-web', {
      issuer: kube.server.serviceAccountIssuer.issuer,
      subject: 'system:serviceaccount:team-a:web',
      audiences: [AUDIENCE],
    });
    const pod = await core.createNamespacedPod({ namespace: 'team-a', body: { metadata: { name: 'web-0' }, spec: { serviceAccountName: 'web', containers: [{ name: 'c', image: 'app' }] } } });
    const token = await emulatorAssertionCredential(az.emulator, id.clientId, () => podToken('web', pod)).getToken(VAULT);
    expect(decodeToken(token.token)).toMatchObject({ appid: id.clientId, oid: id.principalId, xms_mirid: id.id, aud: 'https://vault.azure.net' });
    // AAD read the cluster's discovery and keys itself, without the cluster's bearer token.
    const fetched = kube.server.requestLog().filter((e) => e.path === '/.well-known/openid-configuration' || e.path === '/openid/v1/jwks');
    expect(fetched.map((e) => [e.path, e.status])).toEqual([['/.well-known/openid-configuration', 200], ['/openid/v1/jwks', 200]]);
  });

  it("refuses another service account's token for that identity (AADSTS700213): one namespace's SA cannot use another's credential", async () => {
    const id = az.emulator.createUserAssignedIdentity(az.resourceGroup, 'fed-web-only');
    az.emulator.putFederatedCredential(id.id, 'aadpi-team-a-web', { issuer: kube.server.serviceAccountIssuer.issuer, subject: 'system:serviceaccount:team-a:web' });
    const pod = await core.createNamespacedPod({ namespace: 'team-a', body: { metadata: { name: 'batch-0' }, spec: { serviceAccountName: 'batch', containers: [{ name: 'c', image: 'app' }] } } });
    await expect(emulatorAssertionCredential(az.emulator, id.clientId, () => podToken('batch', pod)).getToken(VAULT)).rejects.toThrow(/AADSTS700213/);
  });
});
