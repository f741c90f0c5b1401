import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { describe, expect, it } from 'vitest';
import { pkcs12ToPem } from '../../src/nmi/tokens/pkcs12.js';
import { kubeSecretReader, readSecret, selectCertificate, selectClientSecret } from '../../src/nmi/tokens/secrets.js';
import { TokenError } from '../../src/nmi/tokens/types.js';

const ref = { name: 'sp', namespace: 'default' };
const b = (s: string) => Buffer.from(s);

describe('selectClientSecret', () => {
  it('takes clientSecret when present, whatever else is there', () => {
    expect(selectClientSecret({ a: b('x'), clientSecret: b('s3cret'), z: b('y') }, ref)).toBe('s3cret');
  });
  it('takes the only key when there is one', () => {
    expect(selectClientSecret({ password: b('only') }, ref)).toBe('only');
  });
  it('takes the value of several keys when only one is non-empty, or when they all hold the same (the original picked one at random)', () => {
    expect(selectClientSecret({ tenant: b(''), secret: b('the-one'), other: b('') }, ref)).toBe('the-one');
    expect(selectClientSecret({ old: b('same'), current: b('same') }, ref)).toBe('same');
    expect(() => selectClientSecret({ x: b(''), y: b('') }, ref)).toThrow(/empty/);
  });
  it('refuses several different values with none named clientSecret, counting them but never naming them', () => {
    const err = (() => {
      try {
        selectClientSecret({ b: b('1'), a: b('2') }, ref);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(TokenError);
    expect(err).toMatchObject({ kind: 'invalid' });
    expect((err as Error).message).toContain('2 keys');
    expect((err as Error).message).toContain('default/sp');
    expect((err as Error).message).not.toMatch(/\ba\b.*\bb\b|\(a, b\)/);
    // the pod is told nothing about the Secret
    expect((err as TokenError).publicMessage).not.toMatch(/sp|keys|clientSecret/);
  });
  it('refuses an empty secret and an empty value', () => {
    expect(() => selectClientSecret({}, ref)).toThrow(/has no data/);
    expect(() => selectClientSecret({ clientSecret: b('') }, ref)).toThrow(/empty/);
  });
});

describe('selectCertificate', () => {
  it('reads certificate and password', () => {
    expect(selectCertificate({ certificate: b('pfx'), password: b('pw') }, ref)).toEqual({ pfx: b('pfx'), password: 'pw' });
    expect(selectCertificate({ certificate: b('pfx') }, ref).password).toBe('');
  });
  it('refuses a secret without certificate, without naming the keys it has', () => {
    expect(() => selectCertificate({ 'team-a-cert-key': b('x') }, ref)).toThrow(/no certificate key \(it has 1 other keys\)/);
    expect(() => selectCertificate({ 'team-a-cert-key': b('x') }, ref)).not.toThrow(/team-a-cert-key/);
  });
});

describe('readSecret and kubeSecretReader', () => {
  it('decodes base64 data from the API', async () => {
    const reader = kubeSecretReader({
      readNamespacedSecret: async ({ name, namespace }) => {
        expect({ name, namespace }).toEqual(ref);
        return { data: { clientSecret: Buffer.from('abc').toString('base64') } };
      },
    });
    const data = await readSecret(reader, ref, 'default');
    expect(data['clientSecret']?.toString()).toBe('abc');
  });
  it('turns a failed read into an invalid TokenError with the cause', async () => {
    const cause = new Error('404 not found');
    const reader = { get: async () => Promise.reject(cause) };
    const err = await readSecret(reader, ref, 'default').catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'invalid' });
    expect((err as Error).cause).toBe(cause);
  });
  it('refuses a reference without a namespace', async () => {
    await expect(readSecret({ get: async () => ({}) }, { name: 'x', namespace: '' }, 'default')).rejects.toMatchObject({
      kind: 'invalid',
    });
  });
  it("refuses a Secret outside the identity's namespace without reading it, unless allowed", async () => {
    const reads: string[] = [];
    const reader = { get: async (ns: string, name: string) => (reads.push(`${ns}/${name}`), { clientSecret: b('x') }) };
    const err = await readSecret(reader, { name: 'victim', namespace: 'team-a' }, 'team-b').catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'refused' });
    expect((err as Error).message).toContain('--allow-cross-namespace-secrets');
    expect((err as TokenError).publicMessage).not.toMatch(/team-a|victim/);
    expect(reads).toEqual([]);
    await readSecret(reader, { name: 'victim', namespace: 'team-a' }, 'team-b', true);
    expect(reads).toEqual(['team-a/victim']);
  });
});

/** A PKCS#12 archive (key + self-signed leaf + an unrelated CA cert first) as a client would put in the Secret. */
function buildPfx(password: string): { pfx: Buffer; certPem: string } {
  const toForgeKey = (pem: string) => forge.pki.privateKeyFromPem(pem);
  const mk = (cn: string) => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.publicKeyFromPem(publicKey);
    cert.serialNumber = '01';
    cert.validity.notBefore = new Date(Date.now() - 60_000);
    cert.validity.notAfter = new Date(Date.now() + 3_600_000);
    cert.setSubject([{ name: 'commonName', value: cn }]);
    cert.setIssuer([{ name: 'commonName', value: cn }]);
    cert.sign(toForgeKey(privateKey), forge.md.sha256.create());
    return { key: toForgeKey(privateKey), cert };
  };
  const leaf = mk('sp-leaf');
  const other = mk('other-ca');
  const asn1 = forge.pkcs12.toPkcs12Asn1(leaf.key, [other.cert, leaf.cert], password, { algorithm: '3des' });
  return { pfx: Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary'), certPem: forge.pki.certificateToPem(leaf.cert) };
}

describe('pkcs12ToPem', () => {
  const { pfx, certPem } = buildPfx('pw');

  it('yields the private key and the leaf certificate first', () => {
    const { pem } = pkcs12ToPem(pfx, 'pw', 'secret default/sp');
    expect(pem).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/);
    const firstCert = pem.slice(pem.indexOf('-----BEGIN CERTIFICATE-----'));
    expect(new X509Certificate(firstCert).subject).toBe(new X509Certificate(certPem).subject);
    expect(pem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
  });

  it('reports a wrong password or garbage as invalid, with the cause', () => {
    for (const [bytes, pw] of [
      [pfx, 'wrong'],
      [Buffer.from('not a pfx'), 'pw'],
    ] as const) {
      const err = (() => {
        try {
          pkcs12ToPem(bytes, pw, 'secret default/sp');
        } catch (e) {
          return e;
        }
      })();
      expect(err).toMatchObject({ kind: 'invalid' });
      expect((err as Error).cause).toBeDefined();
    }
  });
});
