// The token sources and cache against the Azure emulator: real HTTP to its IMDS, real @azure/identity to its AAD.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import forge from 'node-forge';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createTokenProvider,
  identityCacheKey,
  tokenErrorHttpStatus,
  TokenError,
  type SecretReader,
  type TokenProvider,
  type TokenRequestIdentity,
} from '../../src/nmi/tokens/index.js';
import { decodeToken } from '../helpers/azure.js';
import { startAzureEmulator, type AzureEmulator, type ImdsListener } from '../../src/sandbox/cloud/index.js';

const VAULT = 'https://vault.azure.net';

/** Secrets as the API server would hand them over, by namespace/name. */
function memorySecrets(): SecretReader & { put(ns: string, name: string, data: Record<string, Buffer>): void } {
  const store = new Map<string, Record<string, Buffer>>();
  return {
    put: (ns, name, data) => void store.set(`${ns}/${name}`, data),
    get: async (ns, name) => {
      const d = store.get(`${ns}/${name}`);
      if (!d) throw new Error(`secrets "${name}" not found`);
      return d;
    },
  };
}

/** A PKCS#12 archive with an RSA key and its self-signed certificate, as a user would store it in the Secret. */
function buildPfx(password: string): { pfx: Buffer; certPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const key = forge.pki.privateKeyFromPem(privateKey);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey);
  cert.serialNumber = '0a';
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 3_600_000);
  cert.setSubject([{ name: 'commonName', value: 'nmi-sp-test' }]);
  cert.setIssuer([{ name: 'commonName', value: 'nmi-sp-test' }]);
  cert.sign(key, forge.md.sha256.create());
  const asn1 = forge.pkcs12.toPkcs12Asn1(key, [cert], password, { algorithm: '3des' });
  return { pfx: Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary'), certPem: forge.pki.certificateToPem(cert) };
}

describe('token provider against the Azure emulator', () => {
  let azure: AzureEmulator;
  let imds: ImdsListener | undefined;
  let secrets: ReturnType<typeof memorySecrets>;
  let tokens: TokenProvider | undefined;
  const imdsUrl = (): string => {
    if (!imds) throw new Error('test did not start an IMDS listener');
    return imds.url;
  };
  const provider = (): TokenProvider => {
    if (!tokens) throw new Error('test did not build a provider');
    return tokens;
  };
  const rg = 'rg-nmi';

  const providerWith = (o: { imdsAttemptTimeoutMs?: number; spTimeoutMs?: number; allowedAuthorities?: string[] } = {}) =>
    createTokenProvider({
      imds: { endpoint: imdsUrl(),  attemptTimeoutMs: o.imdsAttemptTimeoutMs ?? 5_000, maxAttempts: 2, baseDelayMs: 10, totalBudgetMs: 10_000 },
      secrets,
      servicePrincipal: {
        caPem: azure.caPem,
        defaultAuthority: azure.url,
        timeoutMs: o.spTimeoutMs ?? 10_000,
        maxRetries: 0,
        ...(o.allowedAuthorities ? { allowedAuthorities: o.allowedAuthorities } : {}),
      },
      cache: { negativeTtlMs: 0 },
    });

  beforeEach(async () => {
    azure = await startAzureEmulator();
    azure.createResourceGroup(rg);
    secrets = memorySecrets();
  });

  afterEach(async () => {
    tokens?.stop();
    tokens = undefined;
    await imds?.stop();
    imds = undefined;
    await azure.stop();
  });

  const uami = (name: string, clientID: string): TokenRequestIdentity => ({
    cacheKey: identityCacheKey({ namespace: 'default', name, uid: randomUUID(), resourceVersion: '1' }),
    namespace: 'default',
    type: 0,
    clientID,
  });

  it("gets the assigned identity's token from the node's IMDS, and a 403-class error for an unattached one", async () => {
    const a = azure.createUserAssignedIdentity(rg, 'id-a');
    const b = azure.createUserAssignedIdentity(rg, 'id-b');
    const unattached = azure.createUserAssignedIdentity(rg, 'id-c');
    azure.createVm(rg, 'node-1', { userAssigned: [a.id, b.id] });
    imds = await azure.startImds({ vm: 'node-1' });
    tokens = providerWith();

    const [ta] = await tokens.getTokens(uami('a', a.clientId), VAULT);
    const [tb] = await tokens.getTokens(uami('b', b.clientId), VAULT, { requestedClientId: a.clientId });
    const ca = decodeToken(ta?.accessToken ?? '');
    const cb = decodeToken(tb?.accessToken ?? '');
    expect([ca.appid, ca.oid, ca.aud]).toEqual([a.clientId, a.principalId, VAULT]);
    // a differing requested client id never changes which identity the token is for
    expect([cb.appid, cb.oid, cb.aud]).toEqual([b.clientId, b.principalId, VAULT]);
    expect(ta?.expiresOn).toBe(ca.exp);

    const err = await tokens.getTokens(uami('c', unattached.clientId), VAULT).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenError);
    expect(err).toMatchObject({ kind: 'upstream', status: 400 });
    expect((err as TokenError).body).toContain('Identity not found');
    expect(tokenErrorHttpStatus(err)).toBe(403);
  });

  it('collapses 200 concurrent misses into exactly one IMDS request', async () => {
    const a = azure.createUserAssignedIdentity(rg, 'id-a');
    azure.createVm(rg, 'node-1', { userAssigned: [a.id] });
    imds = await azure.startImds({ vm: 'node-1' });
    tokens = providerWith();
    azure.clearRequestLog();
    const id = uami('a', a.clientId);
    const results = await Promise.all(Array.from({ length: 200 }, () => provider().getTokens(id, VAULT)));
    const first = results[0]?.[0]?.accessToken;
    expect(first).toBeTruthy();
    for (const r of results) expect(r[0]?.accessToken).toBe(first);
    expect(azure.requestLog().filter((e) => e.operation === 'imds_token')).toHaveLength(1);
    expect(tokens.stats().upstreamCalls).toBe(1);
  });

  it('times out a hung IMDS and reports unavailable (503 class)', async () => {
    const a = azure.createUserAssignedIdentity(rg, 'id-a');
    azure.createVm(rg, 'node-1', { userAssigned: [a.id] });
    imds = await azure.startImds({ vm: 'node-1' });
    tokens = providerWith({ imdsAttemptTimeoutMs: 150 });
    azure.injectFault({ operation: 'imds_token', latencyMs: 5_000, count: 10 });
    const err = await tokens.getTokens(uami('a', a.clientId), VAULT).catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'unavailable' });
    expect(tokenErrorHttpStatus(err)).toBe(503);
  });

  describe('service principals', () => {
    beforeEach(async () => {
      // IMDS is not used by these tests, but the provider needs an endpoint; give it a real one.
      azure.createVm(rg, 'node-1');
      imds = await azure.startImds({ vm: 'node-1' });
    });

    const spIdentity = (clientID: string, type: 1 | 2, extra: Partial<TokenRequestIdentity> = {}): TokenRequestIdentity => ({
      cacheKey: identityCacheKey({ namespace: 'default', name: `sp-${clientID}`, uid: randomUUID(), resourceVersion: '1' }),
      namespace: 'default',
      type,
      clientID,
      tenantID: azure.tenantId,
      adEndpoint: azure.url,
      clientPassword: { name: `sp-${clientID}`, namespace: 'default' },
      ...extra,
    });

    it('gets a token with a client secret (type 1), and a 403-class error for a wrong secret', async () => {
      const clientId = randomUUID();
      const sp = azure.registerServicePrincipal({ clientId, secret: 'right' });
      secrets.put('default', `sp-${clientId}`, { note: Buffer.from('ignored'), clientSecret: Buffer.from('right') });
      tokens = providerWith();
      const got = await tokens.getTokens(spIdentity(clientId, 1), VAULT);
      expect(got).toHaveLength(1);
      const c = decodeToken(got[0]?.accessToken ?? '');
      expect([c.appid, c.oid, c.tid, c.aud]).toEqual([clientId, sp.objectId, azure.tenantId, VAULT]);
      // MSAL computes expiry from expires_in on its own clock: allow the second the round trip may straddle.
      expect(Math.abs((got[0]?.expiresOn ?? 0) - (c.exp ?? 0))).toBeLessThanOrEqual(2);

      const wrongId = randomUUID();
      azure.registerServicePrincipal({ clientId: wrongId, secret: 'right' });
      secrets.put('default', `sp-${wrongId}`, { clientSecret: Buffer.from('wrong') });
      const err = await tokens.getTokens(spIdentity(wrongId, 1), VAULT).catch((e: unknown) => e);
      expect(err).toMatchObject({ kind: 'upstream', status: 401 });
      expect((err as TokenError).body).toContain('AADSTS7000215');
      expect(tokenErrorHttpStatus(err)).toBe(403);

      // the Secret is fixed: new content means a new credential, and the next request succeeds
      secrets.put('default', `sp-${wrongId}`, { clientSecret: Buffer.from('right') });
      const fixed = await tokens.getTokens(spIdentity(wrongId, 1), VAULT);
      expect(decodeToken(fixed[0]?.accessToken ?? '').appid).toBe(wrongId);
    });

    it('reports an unreachable authority as unavailable and an unknown tenant as an upstream error', async () => {
      const clientId = randomUUID();
      azure.registerServicePrincipal({ clientId, secret: 's' });
      secrets.put('default', `sp-${clientId}`, { clientSecret: Buffer.from('s') });
      // a loopback port nothing listens on (the IMDS listener's port is HTTP, so take one and free it)
      const closed = await azure.startImds({ vm: 'node-1' });
      await closed.stop();
      tokens = providerWith({ allowedAuthorities: [`https://127.0.0.1:${closed.port}`] });
      const down = await tokens
        .getTokens(spIdentity(clientId, 1, { adEndpoint: `https://127.0.0.1:${closed.port}` }), VAULT)
        .catch((e: unknown) => e);
      expect(down).toMatchObject({ kind: 'unavailable' });
      const unknownTenant = await tokens
        .getTokens(spIdentity(clientId, 1, { tenantID: randomUUID() }), VAULT)
        .catch((e: unknown) => e);
      expect(unknownTenant).toMatchObject({ kind: 'upstream', status: 400 });
    });

    it('gets a token with a PKCS#12 certificate (type 2)', async () => {
      const clientId = randomUUID();
      const { pfx, certPem } = buildPfx('p12-pass');
      const sp = azure.registerServicePrincipal({ clientId, certificatePem: certPem });
      secrets.put('default', `sp-${clientId}`, { certificate: pfx, password: Buffer.from('p12-pass') });
      tokens = providerWith();
      const [t] = await tokens.getTokens(spIdentity(clientId, 2), 'https://storage.azure.com');
      const c = decodeToken(t?.accessToken ?? '');
      expect([c.appid, c.oid, c.aud]).toEqual([clientId, sp.objectId, 'https://storage.azure.com']);
    });

    it('returns the primary token then one per auxiliary tenant', async () => {
      const clientId = randomUUID();
      const aux1 = randomUUID();
      const aux2 = randomUUID();
      azure.registerServicePrincipal({ clientId, secret: 's' });
      azure.registerServicePrincipal({ clientId, secret: 's', tenantId: aux1 });
      azure.registerServicePrincipal({ clientId, secret: 's', tenantId: aux2 });
      secrets.put('default', `sp-${clientId}`, { clientSecret: Buffer.from('s') });
      tokens = providerWith();
      const got = await tokens.getTokens(spIdentity(clientId, 1, { auxiliaryTenantIDs: [aux1, aux2] }), VAULT);
      expect(got.map((t) => decodeToken(t.accessToken).tid)).toEqual([azure.tenantId, aux1, aux2]);
      for (const t of got) expect(decodeToken(t.accessToken).appid).toBe(clientId);
    });

    it('collapses 200 concurrent misses into exactly one AAD token request', async () => {
      const clientId = randomUUID();
      azure.registerServicePrincipal({ clientId, secret: 's' });
      secrets.put('default', `sp-${clientId}`, { clientSecret: Buffer.from('s') });
      tokens = providerWith();
      azure.clearRequestLog();
      const id = spIdentity(clientId, 1);
      const results = await Promise.all(Array.from({ length: 200 }, () => provider().getTokens(id, VAULT)));
      for (const r of results) expect(r[0]?.accessToken).toBe(results[0]?.[0]?.accessToken);
      expect(azure.requestLog().filter((e) => e.operation === 'aad_token')).toHaveLength(1);
    });

    it('times out a hung AAD and reports unavailable (503 class)', async () => {
      const clientId = randomUUID();
      azure.registerServicePrincipal({ clientId, secret: 's' });
      secrets.put('default', `sp-${clientId}`, { clientSecret: Buffer.from('s') });
      tokens = providerWith({ spTimeoutMs: 300 });
      azure.injectFault({ operation: 'aad_token', latencyMs: 5_000, count: 5 });
      const err = await tokens.getTokens(spIdentity(clientId, 1), VAULT).catch((e: unknown) => e);
      expect(err).toMatchObject({ kind: 'unavailable' });
      expect((err as Error).message).toContain('did not finish within 300 ms');
    });
  });
});
