// Federated mode end to end, minus the wiring into MIC's controller and NMI's decision path: MIC's credential writer
// creates the credential (issuer copied from the API server, byte for byte), NMI's federated token source asks the
// Kubernetes API emulator's TokenRequest for a token bound to the pod and exchanges it at the Azure emulator's
// Azure AD, which fetches the API server's issuer discovery and keys over HTTPS. No VM or VMSS is ever PATCHed.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realClock } from '../../src/common/clock.js';
import { normalizeAzureIdentity } from '../../src/crds/normalize.js';
import type { AzureIdentity } from '../../src/crds/types.js';
import { desiredFederatedCredentials } from '../../src/mic/core/federation.js';
import { FederatedCredentialWriter, msiFederatedCredentialPort, type FederatedSyncOutcome } from '../../src/mic/federation/credentials.js';
import {
  createFederatedTokenSource,
  kubeServiceAccountTokenPort,
  NO_CREDENTIAL_MESSAGE,
  SA_TOKEN_MESSAGE,
  type FederatedPod,
  type ServiceAccountTokenPort,
} from '../../src/nmi/tokens/federated.js';
import { identityCacheKey, TokenError, tokenErrorHttpStatus, tokenErrorPublicMessage } from '../../src/nmi/tokens/types.js';
import type { UserAssignedIdentity } from '../../src/sandbox/cloud/index.js';
import { startTestApiServer, type TestApiServer } from '../helpers/apiserver.js';
import { decodeToken, startTestAzure, type TestAzure } from '../helpers/azure.js';

const VAULT = 'https://vault.azure.net';

describe('federated token for a pod: TokenRequest, federated credential, exchange', () => {
  let az: TestAzure;
  let api: TestApiServer;
  let issuer: string;
  let core: k8s.CoreV1Api;
  let n = 0;

  beforeAll(async () => {
    [az, api] = await Promise.all([startTestAzure(), startTestApiServer({ tls: true })]);
    issuer = api.server.serviceAccountIssuer.issuer;
    az.emulator.trustIssuerCa(api.server.caPem ?? '');
    // Federated credential writes need Managed Identity Contributor (Operator only reads them).
    az.emulator.grantRole(az.servicePrincipal.objectId, 'Managed Identity Contributor', `/subscriptions/${az.emulator.subscriptionId}/resourceGroups/${az.resourceGroup}`);
    core = api.kc.makeApiClient(k8s.CoreV1Api);
  });
  afterAll(async () => {
    await Promise.all([az?.stop(), api?.stop()]);
  });

  const newIdentity = (): { uami: UserAssignedIdentity; view: AzureIdentity } => {
    const uami = az.emulator.createUserAssignedIdentity(az.resourceGroup, `fed-${++n}`);
    const view = normalizeAzureIdentity({
      metadata: { name: `fed-${n}`, namespace: 'team-a', uid: `uid-${n}`, resourceVersion: '1' },
      spec: { type: 0, resourceID: uami.id, clientID: uami.clientId, mode: 'Federated' },
    }).value as AzureIdentity;
    return { uami, view };
  };
  const writer = () =>
    new FederatedCredentialWriter({
      port: msiFederatedCredentialPort({ credential: az.credential, endpoint: az.emulator.url, caPem: az.emulator.caPem }),
      clock: realClock,
      issuer,
      backoff: { initialMs: 50, maxMs: 400 },
    });
  const sync = (w: FederatedCredentialWriter, view: AzureIdentity, serviceAccounts: string[]): Promise<FederatedSyncOutcome> => {
    const [desired] = desiredFederatedCredentials(issuer, [view], serviceAccounts.map((sa) => ({ identity: view, namespace: 'team-a', serviceAccount: sa })));
    if (desired === undefined) throw new Error('no desired set');
    return w.sync(desired);
  };
  const vmPatches = () => az.emulator.requestLog().filter((e) => e.operation === 'vm_patch' || e.operation === 'vmss_patch');

  describe('NMI: TokenRequest bound to the pod, exchanged at Azure AD', () => {
    /** Every service-account token TokenRequest issued to NMI's port, as Azure AD received it. */
    const issued: string[] = [];
    const recordingPort = (): ServiceAccountTokenPort => {
      const real = kubeServiceAccountTokenPort(core);
      return { request: async (pod, audience, seconds) => {
        const jwt = await real.request(pod, audience, seconds);
        issued.push(jwt);
        return jwt;
      } };
    };
    const tokens = () =>
      createFederatedTokenSource({
        serviceAccountTokens: recordingPort(),
        tenantId: az.emulator.tenantId,
        authorityHost: az.emulator.url,
        caPem: az.emulator.caPem,
        maxRetries: 0,
        clock: realClock,
        propagationRetryMs: 200,
        maxPropagationWaitMs: 5_000,
      });
    const makePod = async (name: string, serviceAccountName: string): Promise<FederatedPod> => {
      if (serviceAccountName !== 'default') {
        await core.createNamespacedServiceAccount({ namespace: 'team-a', body: { metadata: { name: serviceAccountName } } }).catch(() => undefined);
      }
      const pod = await core.createNamespacedPod({
        namespace: 'team-a',
        body: { metadata: { name }, spec: { serviceAccountName, containers: [{ name: 'c', image: 'busybox' }] } },
      });
      return { namespace: 'team-a', name, uid: pod.metadata?.uid ?? '', serviceAccountName };
    };

    beforeAll(async () => {
      await core.createNamespace({ body: { metadata: { name: 'team-a' } } });
    });

    it("gets the pod its identity's token once MIC wrote the credential, with the identity's claims", async () => {
      const { uami, view } = newIdentity();
      await sync(writer(), view, ['web']);
      const pod = await makePod('web-1', 'web');
      const token = await tokens().getToken({ clientID: uami.clientId, cacheKey: identityCacheKey(view) }, VAULT, pod);
      expect(token).toMatchObject({ resource: VAULT, clientId: uami.clientId, tokenType: 'Bearer' });
      const claims = decodeToken(token.accessToken);
      expect(claims).toMatchObject({ appid: uami.clientId, oid: uami.principalId });
      // The assertion was the pod's own service account's, bound to this pod, short-lived, for Azure AD only.
      const sa = JSON.parse(Buffer.from(issued.at(-1)?.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown> & {
        exp: number; iat: number; 'kubernetes.io': { namespace: string; pod: { name: string; uid: string }; serviceaccount: { name: string } };
      };
      expect(sa).toMatchObject({ iss: issuer, sub: 'system:serviceaccount:team-a:web', aud: ['api://AzureADTokenExchange'] });
      expect(sa['kubernetes.io']).toMatchObject({ namespace: 'team-a', pod: { name: 'web-1', uid: pod.uid }, serviceaccount: { name: 'web' } });
      expect(sa.exp - sa.iat).toBe(600);
      expect(vmPatches()).toEqual([]);
    });

    it('refuses a service account without a credential (403), and a pod that is gone (403) without calling Azure AD', async () => {
      const { uami, view } = newIdentity();
      await sync(writer(), view, ['web']);
      const other = await makePod('other-1', 'other');
      const id = { clientID: uami.clientId, cacheKey: identityCacheKey(view) };
      const refused = (await tokens().getToken(id, VAULT, other, { credentialWrittenAtMs: 0 }).catch((e: unknown) => e)) as TokenError;
      expect(refused).toBeInstanceOf(TokenError);
      expect(tokenErrorHttpStatus(refused)).toBe(403);
      expect(tokenErrorPublicMessage(refused)).toBe(NO_CREDENTIAL_MESSAGE);

      const web = await makePod('web-gone', 'web');
      await core.deleteNamespacedPod({ namespace: 'team-a', name: 'web-gone', gracePeriodSeconds: 0 });
      const before = az.emulator.requestLog().filter((e) => e.operation === 'aad_token').length;
      const gone = (await tokens().getToken(id, VAULT, web).catch((e: unknown) => e)) as TokenError;
      expect(tokenErrorHttpStatus(gone)).toBe(403);
      expect(tokenErrorPublicMessage(gone)).toBe(SA_TOKEN_MESSAGE);
      // a pod recreated under the same name has a new uid: the old pod's uid gets nothing either
      await makePod('web-gone', 'web');
      expect(tokenErrorHttpStatus(await tokens().getToken(id, VAULT, web).catch((e: unknown) => e))).toBe(403);
      expect(az.emulator.requestLog().filter((e) => e.operation === 'aad_token').length).toBe(before);
    });

    it('waits out a new credential\'s propagation in-call, within its bound', async () => {
      const { uami, view } = newIdentity();
      az.emulator.setFederationPropagation(1_000);
      try {
        const out = await sync(writer(), view, ['prop']);
        const writtenAtMs = out.kind === 'synced' ? out.ready[0]?.writtenAtMs : undefined;
        expect(writtenAtMs).toBeTypeOf('number');
        const pod = await makePod('prop-1', 'prop');
        const logBefore = az.emulator.requestLog().length;
        const token = await tokens().getToken({ clientID: uami.clientId, cacheKey: identityCacheKey(view) }, VAULT, pod, writtenAtMs === undefined ? {} : { credentialWrittenAtMs: writtenAtMs });
        expect(token.clientId).toBe(uami.clientId);
        const answers = az.emulator.requestLog().slice(logBefore).filter((e) => e.operation === 'aad_token').map((e) => e.status);
        // refused (AADSTS70021, 400) while propagating, retried in-call, then issued
        expect(answers[0]).toBe(400);
        expect(answers.at(-1)).toBe(200);
      } finally {
        az.emulator.setFederationPropagation(0);
      }
    });
  });
});
