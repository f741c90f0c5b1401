// NMI's federated token source with the real @azure/identity ClientAssertionCredential over real HTTPS, against a
// small Azure AD stand-in written here (the token endpoint and its discovery document, answering as Azure AD does
// for the client_assertion grant) and a fake TokenRequest port. What is pinned: the service-account token is the
// pod's own, bound to it, minted per exchange and never reused; Azure AD's refusals become the statuses attachment
// mode uses, with the AADSTS code in the log only; propagation is retried for a bounded time, then explained.
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Clock } from '../../src/common/clock.js';
import { FEDERATED_AUDIENCE } from '../../src/crds/federation.js';
import {
  createFederatedTokenSource,
  federatedCacheKey,
  kubeServiceAccountTokenPort,
  NO_CREDENTIAL_MESSAGE,
  PROPAGATING_MESSAGE,
  REFUSED_MESSAGE,
  SA_TOKEN_MESSAGE,
  type FederatedPod,
  type FederatedTokenSourceOptions,
  type ServiceAccountTokenPort,
} from '../../src/nmi/tokens/federated.js';
import { identityCacheKey, TokenError, tokenErrorHttpStatus, tokenErrorPublicMessage } from '../../src/nmi/tokens/types.js';
import { createCaAndServerCertificate } from '../../src/sandbox/tls.js';

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const CLIENT = '11111111-2222-3333-4444-555555555555';
const RESOURCE = 'https://vault.azure.net';
const identity = { clientID: CLIENT, cacheKey: identityCacheKey({ namespace: 'team-a', name: 'fed', uid: 'u', resourceVersion: '1' }) };
const podA: FederatedPod = { namespace: 'team-a', name: 'web-1', uid: 'uid-web-1', serviceAccountName: 'web' };
const podB: FederatedPod = { namespace: 'team-a', name: 'web-2', uid: 'uid-web-2', serviceAccountName: 'web' };

interface TokenCall {
  readonly form: URLSearchParams;
}
type Answer = { status: number; body: Record<string, unknown> };

/** Azure AD as the client_assertion grant sees it; `answer` decides each token response. */
class FakeAad {
  readonly calls: TokenCall[] = [];
  answer: (call: TokenCall, n: number) => Answer = () => ok();
  private server!: Server;
  caPem = '';
  url = '';

  async start(): Promise<void> {
    const tls = createCaAndServerCertificate({
      caCommonName: 'fake-aad-ca',
      serverCommonName: '127.0.0.1',
      altNames: [{ type: 7, ip: '127.0.0.1' }],
      backdateMs: 60_000,
    });
    this.caPem = tls.caPem;
    this.server = createServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => {
      const url = new URL(req.url ?? '/', 'https://127.0.0.1');
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const send = (status: number, body: unknown) => {
          res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(body));
        };
        const base = `${this.url}/${TENANT}`;
        if (url.pathname === `/${TENANT}/v2.0/.well-known/openid-configuration`) {
          return send(200, {
            token_endpoint: `${base}/oauth2/v2.0/token`,
            jwks_uri: `${base}/discovery/v2.0/keys`,
            issuer: `${base}/v2.0`,
            authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
            end_session_endpoint: `${base}/oauth2/v2.0/logout`,
          });
        }
        if (url.pathname === `/${TENANT}/oauth2/v2.0/token` && req.method === 'POST') {
          const call = { form: new URLSearchParams(Buffer.concat(chunks).toString('utf8')) };
          this.calls.push(call);
          const a = this.answer(call, this.calls.length);
          return send(a.status, a.body);
        }
        send(404, { error: 'not_found' });
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  stop(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

function ok(): Answer {
  return { status: 200, body: { token_type: 'Bearer', expires_in: 86399, ext_expires_in: 86399, access_token: 'aad-access-token' } };
}
function aadsts(status: number, error: string, code: number, text: string): Answer {
  return {
    status,
    body: {
      error,
      error_description: `AADSTS${code}: ${text}\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: 2026-12-02 16:00:00Z`,
      error_codes: [code],
      timestamp: '2026-12-02 16:00:00Z',
      trace_id: 't',
      correlation_id: 'c',
    },
  };
}
const noRecord = () =>
  aadsts(400, 'invalid_request', 70021, "No matching federated identity record found for presented assertion. Assertion Issuer: 'https://issuer/'. Assertion Subject: 'system:serviceaccount:team-a:web'. Assertion Audience: 'api://AzureADTokenExchange'.");

/** TokenRequest stand-in: a fresh token per call, recording who asked for what. */
class FakeTokenRequest implements ServiceAccountTokenPort {
  readonly calls: Array<{ pod: FederatedPod; audience: string; expirationSeconds: number; token: string }> = [];
  fail: ((pod: FederatedPod) => unknown) | undefined;
  async request(pod: FederatedPod, audience: string, expirationSeconds: number): Promise<string> {
    const err = this.fail?.(pod);
    if (err !== undefined) throw err;
    const token = `sa-token-${pod.uid}-${this.calls.length + 1}`;
    this.calls.push({ pod, audience, expirationSeconds, token });
    return token;
  }
}

/** A Clock whose sleeps return at once and move time: propagation waits are instant but counted. */
function steppingClock(start = 1_800_000_000_000): Clock & { t: number; slept: number[] } {
  const c = {
    t: start,
    slept: [] as number[],
    now: () => c.t,
    sleep: (ms: number) => {
      c.slept.push(ms);
      c.t += ms;
      return Promise.resolve();
    },
  };
  return c;
}

async function failure(p: Promise<unknown>): Promise<TokenError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(TokenError);
  return err as TokenError;
}

describe('federated token source', () => {
  const aad = new FakeAad();
  let sa: FakeTokenRequest;
  let clock: ReturnType<typeof steppingClock>;
  const source = (extra: Partial<FederatedTokenSourceOptions> = {}) =>
    createFederatedTokenSource({
      serviceAccountTokens: sa,
      tenantId: TENANT,
      authorityHost: aad.url,
      caPem: aad.caPem,
      maxRetries: 0,
      clock,
      propagationWindowMs: 300_000,
      maxPropagationWaitMs: 10_000,
      propagationRetryMs: 2_000,
      ...extra,
    });

  beforeAll(() => aad.start());
  afterAll(() => aad.stop());
  beforeEach(() => {
    aad.calls.length = 0;
    aad.answer = () => ok();
    sa = new FakeTokenRequest();
    clock = steppingClock();
  });

  it("exchanges the pod's own service-account token, bound to the pod, for <resource>/.default under the identity's client ID", async () => {
    const token = await source().getToken(identity, RESOURCE, podA);
    expect(sa.calls).toEqual([{ pod: podA, audience: FEDERATED_AUDIENCE, expirationSeconds: 600, token: 'sa-token-uid-web-1-1' }]);
    expect(aad.calls).toHaveLength(1);
    const form = aad.calls[0]!.form;
    expect(form.get('grant_type')).toBe('client_credentials');
    expect(form.get('client_id')).toBe(CLIENT);
    expect(form.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    expect(form.get('client_assertion')).toBe('sa-token-uid-web-1-1');
    expect(form.get('scope')).toBe(`${RESOURCE}/.default`);
    expect(token).toMatchObject({ accessToken: 'aad-access-token', resource: RESOURCE, tokenType: 'Bearer', clientId: CLIENT });
    expect(token.expiresOn).toBeGreaterThan(Math.floor(Date.now() / 1000) + 86_000);
  });

  it('mints a new service-account token for every exchange and never presents one pod\'s token for another', async () => {
    const s = source();
    await s.getToken(identity, RESOURCE, podA);
    await s.getToken(identity, RESOURCE, podA);
    await s.getToken(identity, RESOURCE, podB);
    expect(sa.calls.map((c) => c.pod.uid)).toEqual(['uid-web-1', 'uid-web-1', 'uid-web-2']);
    // Azure AD was asked three times (no SDK cache between exchanges), each with the token minted for that call.
    expect(aad.calls.map((c) => c.form.get('client_assertion'))).toEqual(sa.calls.map((c) => c.token));
    expect(new Set(sa.calls.map((c) => c.token)).size).toBe(3);
  });

  it('retries "no matching federated identity record" in-call while the credential is new, minting afresh each time', async () => {
    aad.answer = (_c, n) => (n < 3 ? noRecord() : ok());
    const token = await source().getToken(identity, RESOURCE, podA, { credentialWrittenAtMs: clock.t - 5_000 });
    expect(token.accessToken).toBe('aad-access-token');
    expect(clock.slept).toEqual([2_000, 2_000]);
    expect(sa.calls).toHaveLength(3);
    expect(new Set(aad.calls.map((c) => c.form.get('client_assertion'))).size).toBe(3);
  });

  it('answers 503 with a message saying to retry once the in-call wait is spent, inside the window', async () => {
    aad.answer = () => noRecord();
    const err = await failure(source().getToken(identity, RESOURCE, podA, { credentialWrittenAtMs: clock.t }));
    expect(tokenErrorHttpStatus(err)).toBe(503);
    expect(tokenErrorPublicMessage(err)).toBe(PROPAGATING_MESSAGE);
    expect(err.retryAfterMs).toBe(2_000);
    expect(clock.slept.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(10_000);
    expect(err.message).toContain('AADSTS70021');
    expect(tokenErrorPublicMessage(err)).not.toMatch(/AADSTS|system:serviceaccount/);
  });

  it('answers 403 without waiting once the credential is older than the propagation window', async () => {
    aad.answer = () => noRecord();
    const err = await failure(source().getToken(identity, RESOURCE, podA, { credentialWrittenAtMs: clock.t - 301_000 }));
    expect(tokenErrorHttpStatus(err)).toBe(403);
    expect(tokenErrorPublicMessage(err)).toBe(NO_CREDENTIAL_MESSAGE);
    expect(clock.slept).toEqual([]);
    expect(err.body).toBeUndefined(); // Azure AD's text (issuer, subject) never travels towards the pod
  });

  it('bounds the window from the first refusal when the caller cannot say when the credential was written', async () => {
    aad.answer = () => noRecord();
    const s = source();
    expect(tokenErrorHttpStatus(await failure(s.getToken(identity, RESOURCE, podA)))).toBe(503);
    clock.t += 300_000;
    expect(tokenErrorHttpStatus(await failure(s.getToken(identity, RESOURCE, podA)))).toBe(403);
    // a success resets it: a later refusal starts a new window
    aad.answer = () => ok();
    await s.getToken(identity, RESOURCE, podA);
    aad.answer = () => noRecord();
    expect(tokenErrorHttpStatus(await failure(s.getToken(identity, RESOURCE, podA)))).toBe(503);
  });

  it.each([
    ['an expired assertion', aadsts(401, 'invalid_client', 700024, 'Client assertion is not within its valid time range.'), 403, REFUSED_MESSAGE],
    ['a bad signature', aadsts(401, 'invalid_client', 700027, 'Client assertion failed signature validation.'), 403, REFUSED_MESSAGE],
    ['a wrong audience', aadsts(401, 'invalid_client', 700212, "No matching federated identity record found for presented assertion audience 'x'."), 403, REFUSED_MESSAGE],
    ['an unreachable issuer', aadsts(400, 'invalid_request', 90061, 'Request to External OIDC endpoint failed.'), 503, undefined],
    ['Azure AD failing', { status: 503, body: { error: 'temporarily_unavailable' } }, 503, undefined],
  ])('maps %s to the status attachment mode uses, with the AADSTS code in the log only', async (_what, answer, status, publicMessage) => {
    aad.answer = () => answer as Answer;
    const err = await failure(source().getToken(identity, RESOURCE, podA));
    expect(tokenErrorHttpStatus(err)).toBe(status);
    if (publicMessage !== undefined) expect(tokenErrorPublicMessage(err)).toBe(publicMessage);
    expect(tokenErrorPublicMessage(err)).not.toContain('AADSTS');
    expect(clock.slept).toEqual([]);
  });

  it('answers 503 when Azure AD cannot be reached', async () => {
    const err = await failure(source({ authorityHost: 'https://127.0.0.1:1' }).getToken(identity, RESOURCE, podA));
    expect(tokenErrorHttpStatus(err)).toBe(503);
    expect(tokenErrorPublicMessage(err)).not.toContain('127.0.0.1');
    expect(aad.calls).toEqual([]);
  });

  it.each([
    [404, 403, 'the pod is gone'],
    [409, 403, 'the pod was recreated (uid differs)'],
    [400, 403, 'the pod runs under another service account'],
    [403, 503, "NMI lacks create on serviceaccounts/token"],
    [500, 503, 'the API server failed'],
  ])('answers TokenRequest %i with %i (%s) and never calls Azure AD', async (code, status) => {
    sa.fail = () => Object.assign(new Error(`HTTP ${code}`), { code });
    const err = await failure(source().getToken(identity, RESOURCE, podA));
    expect(tokenErrorHttpStatus(err)).toBe(status);
    expect(tokenErrorPublicMessage(err)).toBe(SA_TOKEN_MESSAGE);
    expect(aad.calls).toEqual([]);
  });

  it('refuses a pod without a service account before any call', async () => {
    const err = await failure(source().getToken(identity, RESOURCE, { ...podA, serviceAccountName: '' }));
    expect(tokenErrorHttpStatus(err)).toBe(403);
    expect(sa.calls).toEqual([]);
    expect(aad.calls).toEqual([]);
  });
});

describe('federated token plumbing', () => {
  it('keys the cache per service account, under the identity key so invalidating the identity drops it', () => {
    const web = federatedCacheKey(identity.cacheKey, podA);
    expect(federatedCacheKey(identity.cacheKey, podB)).toBe(web); // same service account, same credential
    expect(federatedCacheKey(identity.cacheKey, { ...podA, serviceAccountName: 'worker' })).not.toBe(web);
    expect(federatedCacheKey(identity.cacheKey, { namespace: 'team-a:x', serviceAccountName: 'web' })).not.toBe(
      federatedCacheKey(identity.cacheKey, { namespace: 'team-a', serviceAccountName: 'x:web' }),
    );
    expect(web.startsWith('team-a/fed@')).toBe(true);
  });

  it('asks TokenRequest for the pod-bound token as the API server expects it', async () => {
    const seen: unknown[] = [];
    const port = kubeServiceAccountTokenPort({
      createNamespacedServiceAccountToken: async (req) => {
        seen.push(req);
        return { spec: req.body.spec, status: { token: 'jwt', expirationTimestamp: new Date() } };
      },
    });
    expect(await port.request(podA, FEDERATED_AUDIENCE, 600)).toBe('jwt');
    expect(seen).toEqual([
      {
        namespace: 'team-a',
        name: 'web',
        body: {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          spec: {
            audiences: [FEDERATED_AUDIENCE],
            expirationSeconds: 600,
            boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: 'web-1', uid: 'uid-web-1' },
          },
        },
      },
    ]);
  });
});
