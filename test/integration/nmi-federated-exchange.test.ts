// NMI's federated token source against the Azure emulator's Azure AD, which checks the assertion for real: it fetches
// the issuer's discovery document and keys over HTTPS, verifies signature, issuer, subject, audience and time, and
// matches a federated identity credential on the identity. The service-account tokens come from a test issuer
// standing in for the API server's TokenRequest (the port's own test is in nmi-federated-token.test.ts).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realClock } from '../../src/common/clock.js';
import { FEDERATED_AUDIENCE, federatedCredentialName, serviceAccountSubject } from '../../src/crds/federation.js';
import {
  createFederatedTokenSource,
  NO_CREDENTIAL_MESSAGE,
  REFUSED_MESSAGE,
  type FederatedPod,
  type FederatedTokenSourceOptions,
  type ServiceAccountTokenPort,
} from '../../src/nmi/tokens/federated.js';
import { TokenError, tokenErrorHttpStatus, tokenErrorPublicMessage } from '../../src/nmi/tokens/types.js';
import type { UserAssignedIdentity } from '../../src/sandbox/cloud/index.js';
import { decodeToken, startTestAzure, type TestAzure } from '../helpers/azure.js';
import { startTestIssuer, type TestIssuer } from '../helpers/test-issuer.js';

const VAULT = 'https://vault.azure.net';

describe('federated token source against the Azure emulator', () => {
  let az: TestAzure;
  let issuer: TestIssuer;
  let n = 0;
  /** What the token port minted, in order (the assertion Azure AD saw each time). */
  let minted: Array<{ pod: FederatedPod; audience: string; expirationSeconds: number }>;
  let expiresIn: number | undefined;

  const port: ServiceAccountTokenPort = {
    async request(pod, audience, expirationSeconds) {
      minted.push({ pod, audience, expirationSeconds });
      return issuer.sign({ sub: serviceAccountSubject(pod.namespace, pod.serviceAccountName), aud: [audience], expiresIn: expiresIn ?? expirationSeconds });
    },
  };
  const source = (extra: Partial<FederatedTokenSourceOptions> = {}) =>
    createFederatedTokenSource({
      serviceAccountTokens: port,
      tenantId: az.emulator.tenantId,
      authorityHost: az.emulator.url,
      caPem: az.emulator.caPem,
      maxRetries: 0,
      clock: realClock,
      propagationRetryMs: 200,
      maxPropagationWaitMs: 5_000,
      ...extra,
    });
  const federatedIdentity = (serviceAccounts: string[]): UserAssignedIdentity => {
    const uami = az.emulator.createUserAssignedIdentity(az.resourceGroup, `fx-${++n}`);
    for (const sa of serviceAccounts) {
      const subject = serviceAccountSubject('team-a', sa);
      az.emulator.putFederatedCredential(uami.id, federatedCredentialName(issuer.issuer, subject), { issuer: issuer.issuer, subject, audiences: [FEDERATED_AUDIENCE] });
    }
    return uami;
  };
  const pod = (name: string, serviceAccountName: string): FederatedPod => ({ namespace: 'team-a', name, uid: `uid-${name}`, serviceAccountName });
  const failure = async (p: Promise<unknown>): Promise<TokenError> => {
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(TokenError);
    return err as TokenError;
  };

  beforeAll(async () => {
    [az, issuer] = await Promise.all([startTestAzure({ federation: { issuerFetchTimeoutMs: 500 } }), startTestIssuer()]);
    az.emulator.trustIssuerCa(issuer.caPem);
  });
  afterAll(async () => {
    await Promise.all([az?.stop(), issuer?.stop()]);
  });

  const reset = () => {
    minted = [];
    expiresIn = undefined;
  };

  it("exchanges the pod's service-account token for the identity's token (claims checked), asking for the audience and 600 s", async () => {
    reset();
    const uami = federatedIdentity(['web']);
    const token = await source().getToken({ clientID: uami.clientId, cacheKey: 'team-a/fx@u#1' }, VAULT, pod('web-1', 'web'));
    expect(minted).toEqual([{ pod: pod('web-1', 'web'), audience: FEDERATED_AUDIENCE, expirationSeconds: 600 }]);
    expect(decodeToken(token.accessToken)).toMatchObject({ appid: uami.clientId, oid: uami.principalId, aud: VAULT });
    expect(token).toMatchObject({ resource: VAULT, clientId: uami.clientId });
  });

  it('gets a pod of another service account nothing: 403 with a message naming no AADSTS code', async () => {
    reset();
    const uami = federatedIdentity(['web']);
    const err = await failure(source({ propagationWindowMs: 0 }).getToken({ clientID: uami.clientId, cacheKey: 'k' }, VAULT, pod('x-1', 'other')));
    expect(tokenErrorHttpStatus(err)).toBe(403);
    expect(tokenErrorPublicMessage(err)).toBe(NO_CREDENTIAL_MESSAGE);
    expect(err.message).toMatch(/AADSTS700213/);
  });

  it('waits out propagation of a new credential in-call and then serves the token', async () => {
    reset();
    az.emulator.setFederationPropagation(800);
    try {
      const uami = federatedIdentity(['fresh']);
      const written = Date.now();
      const logBefore = az.emulator.requestLog().length;
      const token = await source().getToken({ clientID: uami.clientId, cacheKey: 'k' }, VAULT, pod('f-1', 'fresh'), { credentialWrittenAtMs: written });
      expect(token.clientId).toBe(uami.clientId);
      expect(minted.length).toBeGreaterThan(1); // refused at first; every retry minted its own assertion
      const statuses = az.emulator.requestLog().slice(logBefore).filter((e) => e.operation === 'aad_token').map((e) => e.status);
      expect(statuses[0]).toBe(400);
      expect(statuses.at(-1)).toBe(200);
    } finally {
      az.emulator.setFederationPropagation(0);
    }
  });

  it('refuses an expired assertion with 403', async () => {
    reset();
    const uami = federatedIdentity(['web']);
    expiresIn = -600;
    const err = await failure(source().getToken({ clientID: uami.clientId, cacheKey: 'k' }, VAULT, pod('web-2', 'web')));
    expect(tokenErrorHttpStatus(err)).toBe(403);
    expect(tokenErrorPublicMessage(err)).toBe(REFUSED_MESSAGE);
    expect(err.message).toContain('AADSTS700024');
  });

  it('answers 503 when Azure AD cannot read the issuer (AADSTS90061)', async () => {
    reset();
    const uami = federatedIdentity(['web']);
    az.emulator.clearIssuerCache();
    issuer.setStalled(true);
    try {
      const err = await failure(source().getToken({ clientID: uami.clientId, cacheKey: 'k' }, VAULT, pod('web-3', 'web')));
      expect(tokenErrorHttpStatus(err)).toBe(503);
      expect(err.message).toContain('AADSTS90061');
      expect(tokenErrorPublicMessage(err)).not.toContain('AADSTS');
    } finally {
      issuer.setStalled(false);
    }
  });
});
