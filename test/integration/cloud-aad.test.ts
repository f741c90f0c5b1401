import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import forge from 'node-forge';
import { ClientCertificateCredential, ClientSecretCredential } from '@azure/identity';
import { jwtVerify, createLocalJWKSet } from 'jose';
import { startAzureEmulator, type AzureEmulator } from '../../src/sandbox/cloud/index.js';
import { decodeToken, emulatorSecretCredential } from '../helpers/azure.js';

describe('Azure emulator: AAD client credentials through @azure/identity', () => {
  let emulator: AzureEmulator;
  beforeAll(async () => {
    emulator = await startAzureEmulator();
  });
  afterAll(async () => {
    await emulator.stop();
  });

  it('issues a verifiable JWT for a client secret, with the resource as audience', async () => {
    const clientId = randomUUID();
    const sp = emulator.registerServicePrincipal({ clientId, secret: 's3cret' });
    const token = await emulatorSecretCredential(emulator, clientId, 's3cret').getToken('https://vault.azure.net/.default');
    const claims = decodeToken(token.token);
    expect(claims).toMatchObject({
      aud: 'https://vault.azure.net',
      appid: clientId,
      oid: sp.objectId,
      tid: emulator.tenantId,
      iss: `https://sts.windows.net/${emulator.tenantId}/`,
      idtyp: 'app',
    });
    expect(claims.xms_mirid).toBeUndefined();
    // The signature checks out against the published JWKS.
    const verified = await jwtVerify(token.token, createLocalJWKSet(await emulator.jwks()));
    expect(verified.payload.appid).toBe(clientId);
    expect(token.expiresOnTimestamp).toBeGreaterThan(Date.now() + 3000_000);
  });

  it('rejects a bad secret with invalid_client AADSTS7000215 and an unknown app with AADSTS700016', async () => {
    const clientId = randomUUID();
    emulator.registerServicePrincipal({ clientId, secret: 'right' });
    await expect(emulatorSecretCredential(emulator, clientId, 'wrong').getToken('https://management.azure.com/.default')).rejects.toThrow(
      /invalid_client.*AADSTS7000215/s,
    );
    await expect(
      emulatorSecretCredential(emulator, randomUUID(), 'x').getToken('https://management.azure.com/.default'),
    ).rejects.toThrow(/AADSTS700016/);
    const tokenCalls = emulator.requestLog().filter((e) => e.operation === 'aad_token' && e.status >= 400);
    expect(tokenCalls.map((e) => e.status)).toEqual(expect.arrayContaining([401, 400]));
  });

  it('accepts a certificate assertion signed by the registered certificate, and refuses another certificate', async () => {
    const clientId = randomUUID();
    const good = selfSignedCertificate(clientId);
    emulator.registerServicePrincipal({ clientId, certificatePem: good.certPem });
    const cred = new ClientCertificateCredential(
      emulator.tenantId,
      clientId,
      { certificate: `${good.certPem}\n${good.keyPem}` },
      { authorityHost: emulator.url, disableInstanceDiscovery: true, tlsOptions: { ca: emulator.caPem } },
    );
    const token = await cred.getToken('https://management.azure.com/.default');
    expect(decodeToken(token.token)).toMatchObject({ appid: clientId, aud: 'https://management.azure.com' });

    const other = selfSignedCertificate(clientId);
    const impostor = new ClientCertificateCredential(
      emulator.tenantId,
      clientId,
      { certificate: `${other.certPem}\n${other.keyPem}` },
      { authorityHost: emulator.url, disableInstanceDiscovery: true, tlsOptions: { ca: emulator.caPem } },
    );
    await expect(impostor.getToken('https://management.azure.com/.default')).rejects.toThrow(/AADSTS700027/);
  });

  it('gives a multi-tenant service principal tokens in each tenant it is registered in, and only there', async () => {
    const clientId = randomUUID();
    const tenantB = randomUUID();
    emulator.registerServicePrincipal({ clientId, secret: 'mt' });
    emulator.registerServicePrincipal({ clientId, secret: 'mt', tenantId: tenantB });
    const inB = await emulatorSecretCredential(emulator, clientId, 'mt', tenantB).getToken('https://management.azure.com/.default');
    expect(decodeToken(inB.token).tid).toBe(tenantB);
    const loner = randomUUID();
    emulator.registerServicePrincipal({ clientId: loner, secret: 'x' });
    await expect(emulatorSecretCredential(emulator, loner, 'x', tenantB).getToken('https://management.azure.com/.default')).rejects.toThrow(
      /AADSTS700016/,
    );
  });

  it('throttles token requests with 429 + Retry-After, which MSAL retries', async () => {
    const clientId = randomUUID();
    emulator.registerServicePrincipal({ clientId, secret: 's' });
    emulator.injectFault({ operation: 'aad_token', status: 429, retryAfter: 1, count: 1 });
    emulator.clearRequestLog();
    const cred = new ClientSecretCredential(emulator.tenantId, clientId, 's', {
      authorityHost: emulator.url,
      disableInstanceDiscovery: true,
      tlsOptions: { ca: emulator.caPem },
    });
    await cred.getToken('https://management.azure.com/.default');
    const calls = emulator.requestLog().filter((e) => e.operation === 'aad_token');
    expect(calls.map((e) => e.status)).toEqual([429, 200]);
  });
});

function selfSignedCertificate(cn: string): { certPem: string; keyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey);
  cert.serialNumber = '01';
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 24 * 3600_000);
  cert.setSubject([{ name: 'commonName', value: cn }]);
  cert.setIssuer([{ name: 'commonName', value: cn }]);
  cert.sign(forge.pki.privateKeyFromPem(privateKey), forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: privateKey };
}
