import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { WorkloadIdentityCredential } from '@azure/identity';
import { RestError } from '@azure/core-rest-pipeline';
import { generateKeyPair } from 'jose';
import { ManualClock } from '../../src/common/clock.js';
import type { UserAssignedIdentity } from '../../src/sandbox/cloud/index.js';
import { armRest, decodeToken, emulatorAssertionCredential, emulatorSecretCredential, startTestAzure, type TestAzure } from '../helpers/azure.js';
import { startTestIssuer, type TestIssuer } from '../helpers/test-issuer.js';

const AUDIENCE = 'api://AzureADTokenExchange';
const VAULT = 'https://vault.azure.net/.default';
const sa = (ns: string, name: string): string => `system:serviceaccount:${ns}:${name}`;

describe('Azure emulator: federated identity credentials (ARM) and the federated exchange (AAD)', () => {
  let az: TestAzure;
  let issuer: TestIssuer;
  let otherIssuer: TestIssuer;
  let rgId: string;
  let n = 0;
  const newIdentity = (): UserAssignedIdentity => az.emulator.createUserAssignedIdentity(az.resourceGroup, `fed-id-${++n}`);

  beforeAll(async () => {
    [az, issuer, otherIssuer] = await Promise.all([
      startTestAzure({ federation: { issuerFetchTimeoutMs: 500 } }),
      startTestIssuer(),
      startTestIssuer(),
    ]);
    az.emulator.trustIssuerCa(issuer.caPem);
    az.emulator.trustIssuerCa(otherIssuer.caPem);
    rgId = `/subscriptions/${az.emulator.subscriptionId}/resourceGroups/${az.resourceGroup}`;
    // The credential writes need Managed Identity Contributor; the cluster roles (Operator) only read them.
    az.emulator.grantRole(az.servicePrincipal.objectId, 'Managed Identity Contributor', rgId);
  });
  afterAll(async () => {
    await Promise.all([az?.stop(), issuer?.stop(), otherIssuer?.stop()]);
  });

  /** A credential the way NMI will build it: the identity's client id, the assertion from the issuer. */
  const assertionCredential = (clientId: string, assertion: () => Promise<string>, tenantId?: string, emulator = az.emulator) =>
    emulatorAssertionCredential(emulator, clientId, assertion, tenantId ?? emulator.tenantId);

  /** The raw token endpoint answer (to check Azure AD's error body field by field). */
  const exchange = async (clientId: string, assertion: string): Promise<{ status: number; body: Record<string, unknown> }> => {
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: clientId,
      scope: VAULT,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    });
    const { request } = await import('node:https');
    return new Promise((resolve, reject) => {
      const req = request(
        `${az.emulator.url}/${az.emulator.tenantId}/oauth2/v2.0/token`,
        { method: 'POST', ca: az.emulator.caPem, headers: { 'content-type': 'application/x-www-form-urlencoded' } },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
        },
      );
      req.on('error', reject);
      req.end(form.toString());
    });
  };

  describe('ARM through @azure/arm-msi', () => {
    it('creates (201), updates (200), gets, lists and deletes (200, then 204) a credential', async () => {
      const id = newIdentity();
      const msi = az.msi();
      const created = await msi.federatedIdentityCredentials.createOrUpdate(az.resourceGroup, id.name, 'fic-web', {
        issuer: issuer.issuer,
        subject: sa('team-a', 'web'),
        audiences: [AUDIENCE],
      });
      expect(created).toMatchObject({
        id: `${id.id}/federatedIdentityCredentials/fic-web`,
        name: 'fic-web',
        type: 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials',
        issuer: issuer.issuer,
        subject: sa('team-a', 'web'),
        audiences: [AUDIENCE],
      });
      const updated = await msi.federatedIdentityCredentials.createOrUpdate(az.resourceGroup, id.name, 'fic-web', {
        issuer: issuer.issuer,
        subject: sa('team-a', 'web2'),
        audiences: [AUDIENCE],
      });
      expect(updated.subject).toBe(sa('team-a', 'web2'));
      expect((await msi.federatedIdentityCredentials.get(az.resourceGroup, id.name, 'fic-web')).subject).toBe(sa('team-a', 'web2'));

      const puts = az.emulator.requestLog().filter((e) => e.operation === 'fic_put' && e.target === `${id.name}/fic-web`);
      expect(puts.map((e) => e.status)).toEqual([201, 200]);
      expect(puts[0]?.path).toContain('api-version=2024-11-30'); // what arm-msi 2.2.0 sends

      await msi.federatedIdentityCredentials.delete(az.resourceGroup, id.name, 'fic-web');
      await msi.federatedIdentityCredentials.delete(az.resourceGroup, id.name, 'fic-web');
      const deletes = az.emulator.requestLog().filter((e) => e.operation === 'fic_delete' && e.target === `${id.name}/fic-web`);
      expect(deletes.map((e) => e.status)).toEqual([200, 204]);
      await expect(msi.federatedIdentityCredentials.get(az.resourceGroup, id.name, 'fic-web')).rejects.toMatchObject({
        statusCode: 404,
        code: 'ResourceNotFound',
      });
    });

    it('lists every credential across pages ($top and nextLink), and a deleted identity takes its credentials with it', async () => {
      const id = newIdentity();
      for (let i = 0; i < 5; i++) {
        az.emulator.putFederatedCredential(id.id, `fic-${i}`, { issuer: issuer.issuer, subject: sa('ns', `sa-${i}`) });
      }
      const names: string[] = [];
      for await (const f of az.msi().federatedIdentityCredentials.list(az.resourceGroup, id.name, { top: 2 })) names.push(f.name ?? '');
      expect(names.sort()).toEqual(['fic-0', 'fic-1', 'fic-2', 'fic-3', 'fic-4']);
      expect(az.emulator.requestLog().filter((e) => e.operation === 'fic_list' && e.target.startsWith(`${id.name}/`))).toHaveLength(3);

      az.emulator.deleteUserAssignedIdentity(id.id);
      az.emulator.createUserAssignedIdentity(az.resourceGroup, id.name);
      expect(az.emulator.listFederatedCredentials(id.id)).toEqual([]);
      await expect(az.msi().federatedIdentityCredentials.list(az.resourceGroup, 'no-such-identity').next()).rejects.toMatchObject({
        statusCode: 404,
        message: "The parent user-assigned identity doesn't exist.",
      });
    });

    it('refuses a second audience, an empty body, a bad name, a duplicate issuer+subject and the 21st credential, as the MSI RP words it', async () => {
      const id = newIdentity();
      const msi = az.msi();
      const put = (name: string, subject: string, audiences = [AUDIENCE]) =>
        msi.federatedIdentityCredentials.createOrUpdate(az.resourceGroup, id.name, name, { issuer: issuer.issuer, subject, audiences });
      await expect(put('two-aud', sa('a', 'b'), [AUDIENCE, 'api://other'])).rejects.toMatchObject({
        statusCode: 400,
        message: 'Federated identity credentials must have exactly one audience.',
      });
      const rest = armRest(az.emulator, az.credential);
      const base = `${id.id}/federatedIdentityCredentials`;
      const empty = await rest('PUT', `${base}/empty-props?api-version=2024-11-30`, { properties: {} });
      expect(empty).toMatchObject({ status: 400, body: { error: { message: 'Federated Identity Credential from HTTP body has empty properties' } } });
      const badName = await rest('PUT', `${base}/-x?api-version=2024-11-30`, { properties: { issuer: issuer.issuer, subject: 's', audiences: [AUDIENCE] } });
      expect(badName).toMatchObject({ status: 400, body: { error: { message: "Federated Identity Credential name '-x' is invalid." } } });

      await put('first', sa('a', 'dup'));
      await expect(put('second', sa('a', 'dup'))).rejects.toMatchObject({
        statusCode: 400,
        message: 'Issuer and subject combination already exists for this Managed Identity.',
      });
      for (let i = 1; i < 20; i++) await put(`fic-${i}`, sa('a', `sa-${i}`));
      expect(az.emulator.listFederatedCredentials(id.id)).toHaveLength(20);
      const err = await put('fic-21', sa('a', 'sa-21')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RestError);
      expect(err).toMatchObject({ statusCode: 400, message: expect.stringContaining('maximum of 20 federated identity credentials') });
      // Updating one of the twenty is still allowed.
      await expect(put('fic-1', sa('a', 'sa-1-renamed'))).resolves.toMatchObject({ subject: sa('a', 'sa-1-renamed') });
    });

    it('answers 409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity to a write while another is in flight under the same identity only', async () => {
      const [one, two] = [newIdentity(), newIdentity()];
      const msi = az.msi();
      const put = (id: UserAssignedIdentity, name: string) =>
        msi.federatedIdentityCredentials.createOrUpdate(az.resourceGroup, id.name, name, { issuer: issuer.issuer, subject: sa('c', name), audiences: [AUDIENCE] });
      az.emulator.setLatency('fic_put', 1000); // wide enough that the three requests overlap on a loaded machine
      try {
        const results = await Promise.allSettled([put(one, 'write-1'), put(one, 'write-2'), put(two, 'write-3')]);
        const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        expect(rejected).toHaveLength(1);
        expect(rejected[0]?.reason).toMatchObject({
          statusCode: 409,
          code: 'ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity',
          message:
            `Too many Federated Identity Credentials are written concurrently for the managed identity '${one.id.toLowerCase()}'. ` +
            'Concurrent Federated Identity Credentials writes under the same managed identity are not supported.',
        });
        expect(az.emulator.listFederatedCredentials(one.id)).toHaveLength(1);
        expect(az.emulator.listFederatedCredentials(two.id)).toHaveLength(1);
        // Serialised, both writes go through.
        await put(one, 'write-4');
        expect(az.emulator.listFederatedCredentials(one.id)).toHaveLength(2);
      } finally {
        az.emulator.setLatency('fic_put', 0);
      }
    });

    it('refuses an api-version that predates federated credentials (NoRegisteredProviderFound)', async () => {
      const id = newIdentity();
      const r = await armRest(az.emulator, az.credential)('GET', `${id.id}/federatedIdentityCredentials?api-version=2018-11-30`);
      expect(r).toMatchObject({ status: 400, body: { error: { code: 'NoRegisteredProviderFound' } } });
      expect(r.body.error.message).toContain("API version '2018-11-30' for type 'userAssignedIdentities/federatedIdentityCredentials'");
      expect((await armRest(az.emulator, az.credential)('GET', `${id.id}/federatedIdentityCredentials?api-version=2023-01-31`)).status).toBe(200);
    });

    it('takes the write latency from the start options too (what the CLI --latency fic_put=MS sets)', async () => {
      const slow = await startTestAzure({ latencyMs: { fic_put: 1000 } });
      try {
        slow.emulator.grantRole(slow.servicePrincipal.objectId, 'Managed Identity Contributor', `/subscriptions/${slow.emulator.subscriptionId}/resourceGroups/${slow.resourceGroup}`);
        const id = slow.emulator.createUserAssignedIdentity(slow.resourceGroup, 'slow-id');
        const put = (name: string) =>
          slow.msi().federatedIdentityCredentials.createOrUpdate(slow.resourceGroup, id.name, name, { issuer: issuer.issuer, subject: sa('s', name), audiences: [AUDIENCE] });
        const results = await Promise.allSettled([put('slow-1'), put('slow-2')]);
        expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
      } finally {
        await slow.stop();
      }
    });

    it('lets Managed Identity Operator read credentials but not write or delete them (Managed Identity Contributor can)', async () => {
      const id = newIdentity();
      const reader = az.emulator.registerServicePrincipal({ clientId: randomUUID(), secret: 'op-secret' });
      az.emulator.grantRole(reader.objectId, 'Managed Identity Operator', rgId);
      const msi = az.msi(emulatorSecretCredential(az.emulator, reader.clientId, 'op-secret'));
      az.emulator.putFederatedCredential(id.id, 'existing', { issuer: issuer.issuer, subject: sa('d', 'e') });
      await expect(msi.federatedIdentityCredentials.get(az.resourceGroup, id.name, 'existing')).resolves.toMatchObject({ subject: sa('d', 'e') });
      const action = 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write';
      await expect(
        msi.federatedIdentityCredentials.createOrUpdate(az.resourceGroup, id.name, 'new-one', { issuer: issuer.issuer, subject: 'x', audiences: [AUDIENCE] }),
      ).rejects.toMatchObject({ statusCode: 403, code: 'AuthorizationFailed', message: expect.stringContaining(`perform action '${action}'`) });
      await expect(msi.federatedIdentityCredentials.delete(az.resourceGroup, id.name, 'existing')).rejects.toMatchObject({
        statusCode: 403,
        message: expect.stringContaining('federatedIdentityCredentials/delete'),
      });
      expect(az.emulator.checkAccess(reader.objectId, action, id.id)).toBe(false);
      expect(az.emulator.checkAccess(az.servicePrincipal.objectId, action, id.id)).toBe(true);
      expect(az.emulator.listFederatedCredentials(id.id).map((f) => f.name)).toEqual(['existing']);
    });
  });

  describe('Azure AD: client_assertion for a managed identity', () => {
    it('gives ClientAssertionCredential a token carrying the same claims IMDS gives that identity', async () => {
      const id = newIdentity();
      az.emulator.putFederatedCredential(id.id, 'web', { issuer: issuer.issuer, subject: sa('team-a', 'web') });
      const cred = assertionCredential(id.clientId, () => issuer.sign({ sub: sa('team-a', 'web') }));
      const token = await cred.getToken(VAULT);
      const claims = decodeToken(token.token);
      expect(claims).toMatchObject({
        aud: 'https://vault.azure.net',
        appid: id.clientId,
        oid: id.principalId,
        tid: az.emulator.tenantId,
        xms_mirid: id.id,
        iss: `https://sts.windows.net/${az.emulator.tenantId}/`,
      });
      expect(token.expiresOnTimestamp).toBeGreaterThan(Date.now() + 23 * 3600_000);

      az.emulator.createVm(az.resourceGroup, `vm-${n}`, { userAssigned: [id.id] });
      const imds = await az.emulator.startImds({ vm: `vm-${n}` });
      try {
        const r = await fetch(`${imds.url}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net&client_id=${id.clientId}`, {
          headers: { Metadata: 'true' },
        });
        const viaImds = decodeToken(((await r.json()) as { access_token: string }).access_token);
        const strip = ({ iat, nbf, exp, uti, ...rest }: Record<string, unknown>) => (void [iat, nbf, exp, uti], rest);
        expect(strip(claims)).toEqual(strip(viaImds));
      } finally {
        await imds.stop();
      }
    });

    it('fetches the discovery document and keys once, then serves from cache; an unknown kid (rotation) fetches again', async () => {
      const id = newIdentity();
      az.emulator.putFederatedCredential(id.id, 'cache', { issuer: issuer.issuer, subject: sa('c', 'cache') });
      az.emulator.clearIssuerCache();
      const before = issuer.hits.get('/oidc/openid/v1/jwks') ?? 0;
      for (let i = 0; i < 3; i++) {
        await assertionCredential(id.clientId, () => issuer.sign({ sub: sa('c', 'cache') })).getToken(VAULT);
      }
      expect((issuer.hits.get('/oidc/openid/v1/jwks') ?? 0) - before).toBe(1);
      const rotated = await issuer.rotate();
      await assertionCredential(id.clientId, () => issuer.sign({ sub: sa('c', 'cache') }, rotated)).getToken(VAULT);
      expect((issuer.hits.get('/oidc/openid/v1/jwks') ?? 0) - before).toBe(2);
    });

    it('works with WorkloadIdentityCredential reading a token file', async () => {
      const id = newIdentity();
      az.emulator.putFederatedCredential(id.id, 'file', { issuer: issuer.issuer, subject: sa('f', 'file') });
      const dir = await mkdtemp(join(tmpdir(), 'fed-token-'));
      try {
        const file = join(dir, 'token');
        await writeFile(file, await issuer.sign({ sub: sa('f', 'file') }));
        const cred = new WorkloadIdentityCredential({
          tenantId: az.emulator.tenantId,
          clientId: id.clientId,
          tokenFilePath: file,
          authorityHost: az.emulator.url,
          disableInstanceDiscovery: true,
          tlsOptions: { ca: az.emulator.caPem },
        });
        expect(decodeToken((await cred.getToken(VAULT)).token).xms_mirid).toBe(id.id);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('refuses an assertion for another subject (AADSTS700213, with Azure AD\'s whole error body)', async () => {
      const id = newIdentity();
      az.emulator.putFederatedCredential(id.id, 'web', { issuer: issuer.issuer, subject: sa('team-a', 'web') });
      const r = await exchange(id.clientId, await issuer.sign({ sub: sa('team-a', 'other') }));
      expect(r.status).toBe(401);
      expect(r.body).toMatchObject({
        error: 'invalid_client',
        error_codes: [700213],
        error_description: expect.stringMatching(
          /^AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:team-a:other'\. .*\r\nTrace ID: .*\r\nCorrelation ID: .*\r\nTimestamp: /s,
        ),
        timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/),
        trace_id: expect.any(String),
        correlation_id: expect.any(String),
      });
      await expect(assertionCredential(id.clientId, () => issuer.sign({ sub: sa('team-a', 'other') })).getToken(VAULT)).rejects.toThrow(/AADSTS700213/);
      // Same subject in another case: the case-sensitive comparison has its own code.
      expect((await exchange(id.clientId, await issuer.sign({ sub: sa('Team-A', 'web') }))).body.error_codes).toEqual([7002138]);
    });

    it('refuses another issuer (AADSTS700211) and another audience (AADSTS700212)', async () => {
      const id = newIdentity();
      az.emulator.putFederatedCredential(id.id, 'web', { issuer: issuer.issuer, subject: sa('team-a', 'web') });
      expect((await exchange(id.clientId, await otherIssuer.sign({ sub: sa('team-a', 'web') }))).body.error_codes).toEqual([700211]);
      expect((await exchange(id.clientId, await issuer.sign({ sub: sa('team-a', 'web'), aud: ['https://kubernetes.default.svc'] }))).body.error_codes).toEqual([
        700212,
      ]);
    });

    it("refuses a token federated for one identity when presented with another identity's client id", async () => {
      const [mine, theirs] = [newIdentity(), newIdentity()];
      az.emulator.putFederatedCredential(mine.id, 'web', { issuer: issuer.issuer, subject: sa('team-a', 'web') });
      az.emulator.putFederatedCredential(theirs.id, 'api', { issuer: issuer.issuer, subject: sa('team-b', 'api') });
      const r = await exchange(theirs.clientId, await issuer.sign({ sub: sa('team-a', 'web') }));
      expect(r).toMatchObject({ status: 401, body: { error_codes: [700213] } });
    });

    it('refuses an expired assertion and one not yet valid (AADSTS700024 with the times)', async () => {
      const id = newIdentity();
      az.emulator.putFederatedCredential(id.id, 'web', { issuer: issuer.issuer, subject: sa('t', 'web') });
      const expired = await exchange(id.clientId, await issuer.sign({ sub: sa('t', 'web'), expiresIn: -600, notBeforeIn: -4200 }));
      expect(expired).toMatchObject({ status: 401, body: { error: 'invalid_client', error_codes: [700024] } });
      expect(expired.body.error_description).toMatch(
        /^AADSTS700024: Client assertion is not within its valid time range\. Current time: \d{4}-\d\d-\d\dT[\d:]+\.\d{7}Z, assertion valid from .*, expiry time of assertion \d{4}-[^ ]+Z\./,
      );
      await expect(assertionCredential(id.clientId, () => issuer.sign({ sub: sa('t', 'web'), expiresIn: -600 })).getToken(VAULT)).rejects.toThrow(/AADSTS700024/);
      const future = await exchange(id.clientId, await issuer.sign({ sub: sa('t', 'web'), notBeforeIn: 3600, expiresIn: 7200 }));
      expect(future.body.error_codes).toEqual([700024]);
      // Inside the skew it is accepted.
      expect((await exchange(id.clientId, await issuer.sign({ sub: sa('t', 'web'), expiresIn: -30 }))).status).toBe(200);
    });

    it('refuses an assertion signed by another key: under the published kid (AADSTS700027) or an unknown kid (AADSTS7000272)', async () => {
      const id = newIdentity();
      az.emulator.putFederatedCredential(id.id, 'web', { issuer: issuer.issuer, subject: sa('t', 'web') });
      const { privateKey: forger } = await generateKeyPair('RS256');
      const sameKid = await exchange(id.clientId, await issuer.sign({ sub: sa('t', 'web') }, { key: forger, kid: issuer.kid }));
      expect(sameKid).toMatchObject({ status: 401, body: { error: 'invalid_client', error_codes: [700027] } });
      expect(sameKid.body.error_description).toMatch(/^AADSTS700027: Client assertion failed signature validation\./);
      const unknownKid = await exchange(id.clientId, await issuer.sign({ sub: sa('t', 'web') }, { key: forger, kid: 'forged-kid' }));
      expect(unknownKid).toMatchObject({ status: 401, body: { error_codes: [7000272] } });
      expect(unknownKid.body.error_description).toContain(
        `The certificate with identifier forged-kid used to sign the federated credential could not be found in the metadata of identity provider ${issuer.issuer}.`,
      );
      // An unsigned token ("alg": "none") is no better.
      const [, payload] = (await issuer.sign({ sub: sa('t', 'web') })).split('.');
      const none = `${Buffer.from(JSON.stringify({ alg: 'none', kid: issuer.kid })).toString('base64url')}.${payload}.`;
      expect((await exchange(id.clientId, none)).body.error_codes).toEqual([700027]);
    });

    it('refuses once the credential is deleted', async () => {
      const id = newIdentity();
      az.emulator.putFederatedCredential(id.id, 'web', { issuer: issuer.issuer, subject: sa('t', 'web') });
      expect((await exchange(id.clientId, await issuer.sign({ sub: sa('t', 'web') }))).status).toBe(200);
      await az.msi().federatedIdentityCredentials.delete(az.resourceGroup, id.name, 'web');
      const r = await exchange(id.clientId, await issuer.sign({ sub: sa('t', 'web') }));
      expect(r).toMatchObject({ status: 401, body: { error: 'invalid_client', error_codes: [700211] } });
    });

    it('answers AADSTS90061 when the issuer cannot be reached: connection refused, accepted and never answered, or stalled mid-body (bounded wait)', async () => {
      const silent: TcpServer = createTcpServer((s: Socket) => void s); // accepts, never answers
      const sockets = new Set<Socket>();
      silent.on('connection', (s) => sockets.add(s));
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      const closed: TcpServer = createTcpServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const closedPort = (closed.address() as AddressInfo).port;
      await new Promise<void>((resolve) => closed.close(() => resolve()));
      try {
        for (const url of [`https://127.0.0.1:${(silent.address() as AddressInfo).port}/`, `https://127.0.0.1:${closedPort}/`]) {
          const id = newIdentity();
          az.emulator.putFederatedCredential(id.id, 'web', { issuer: url, subject: sa('t', 'web') });
          const started = Date.now();
          const r = await exchange(id.clientId, await issuer.sign({ sub: sa('t', 'web'), iss: url }));
          expect(r).toMatchObject({ status: 400, body: { error: 'invalid_request', error_codes: [90061] } });
          expect(r.body.error_description).toMatch(/^AADSTS90061: Request to External OIDC endpoint failed\./);
          expect(Date.now() - started).toBeLessThan(5_000); // issuerFetchTimeoutMs is 500 here
        }
        // An issuer that answers the headers and then stalls mid-body: the same bounded refusal.
        const id = newIdentity();
        az.emulator.putFederatedCredential(id.id, 'web', { issuer: otherIssuer.issuer, subject: sa('t', 'web') });
        az.emulator.clearIssuerCache();
        otherIssuer.setStalled(true);
        const started = Date.now();
        const r = await exchange(id.clientId, await otherIssuer.sign({ sub: sa('t', 'web') }));
        expect(r).toMatchObject({ status: 400, body: { error_codes: [90061] } });
        expect(Date.now() - started).toBeLessThan(5_000);
      } finally {
        otherIssuer.setStalled(false);
        for (const s of sockets) s.destroy();
        await new Promise<void>((resolve) => silent.close(() => resolve()));
      }
    });

    it('answers AADSTS70021 for a credential still propagating, then issues once it has', async () => {
      const id = newIdentity();
      az.emulator.setFederationPropagation(60_000);
      try {
        await az.msi().federatedIdentityCredentials.createOrUpdate(az.resourceGroup, id.name, 'new', {
          issuer: issuer.issuer,
          subject: sa('p', 'new'),
          audiences: [AUDIENCE],
        });
        const r = await exchange(id.clientId, await issuer.sign({ sub: sa('p', 'new') }));
        expect(r).toMatchObject({ status: 400, body: { error: 'invalid_request', error_codes: [70021] } });
        expect(r.body.error_description).toMatch(/^AADSTS70021: No matching federated identity record found for presented assertion\. Assertion Issuer: '/);
      } finally {
        az.emulator.setFederationPropagation(0);
      }
      expect((await exchange(id.clientId, await issuer.sign({ sub: sa('p', 'new') }))).status).toBe(200);
    });

    it('on its injected clock: a credential propagates after the delay, and issuer metadata is fetched again after its TTL', async () => {
      const clock = new ManualClock(Date.now());
      const own = await startTestAzure({ clock, federation: { propagationMs: 30_000, issuerCacheTtlMs: 60_000, trustedIssuerCas: [issuer.caPem] } });
      try {
        const id = own.emulator.createUserAssignedIdentity(own.resourceGroup, 'clocked');
        own.emulator.putFederatedCredential(id.id, 'web', { issuer: issuer.issuer, subject: sa('k', 'web') });
        const get = () => assertionCredential(id.clientId, () => issuer.sign({ sub: sa('k', 'web') }), own.emulator.tenantId, own.emulator);
        await expect(get().getToken(VAULT)).rejects.toThrow(/AADSTS70021:/);
        await clock.advance(30_000);
        const token = await get().getToken(VAULT);
        expect(decodeToken(token.token).iat).toBe(Math.floor(clock.now() / 1000)); // issued on the emulator's clock
        const fetches = () => issuer.hits.get('/oidc/openid/v1/jwks') ?? 0;
        const before = fetches();
        await get().getToken(VAULT);
        expect(fetches()).toBe(before);
        await clock.advance(60_000);
        await get().getToken(VAULT);
        expect(fetches()).toBe(before + 1);
      } finally {
        await own.stop();
      }
    });

    it('refuses a client secret or a missing assertion for a managed identity, and another tenant', async () => {
      const id = newIdentity();
      az.emulator.putFederatedCredential(id.id, 'web', { issuer: issuer.issuer, subject: sa('t', 'web') });
      await expect(emulatorSecretCredential(az.emulator, id.clientId, 'guess').getToken(VAULT)).rejects.toThrow(/AADSTS7000215/);
      const otherTenant = az.emulator.registerServicePrincipal({ clientId: randomUUID(), secret: 'x', tenantId: '11111111-2222-3333-4444-555555555555' }).tenantId;
      await expect(assertionCredential(id.clientId, () => issuer.sign({ sub: sa('t', 'web') }), otherTenant).getToken(VAULT)).rejects.toThrow(/AADSTS700016/);
    });
  });
});
