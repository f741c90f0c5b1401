import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';

/** PEM material for the emulator's HTTPS server, signed by a CA generated for this run. */
export interface TlsMaterial {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

const cache = new Map<string, TlsMaterial>();

/**
 * Like createTlsMaterial, but reuses the material already made in this process for the same hosts: key generation
 * costs about half a second, and tests start many emulators. Each emulator still writes its own CA file.
 */
export function tlsMaterialFor(extraHosts: readonly string[] = []): TlsMaterial {
  const key = [...extraHosts].sort().join(',');
  let material = cache.get(key);
  if (!material) {
    material = createTlsMaterial(extraHosts);
    cache.set(key, material);
  }
  return material;
}

/**
 * Generates a CA and a server certificate for 127.0.0.1, localhost and any extra host names.
 * Keys come from node:crypto (native, fast); node-forge only builds and signs the X.509 structures.
 */
export function createTlsMaterial(extraHosts: readonly string[] = []): TlsMaterial {
  const caKeys = rsaKeyPair();
  const serverKeys = rsaKeyPair();
  const now = new Date();
  const notBefore = new Date(now.getTime() - 60_000); // tolerate small clock skew between processes
  const notAfter = new Date(now.getTime() + 365 * 24 * 3600_000);

  const caSubject = [{ name: 'commonName', value: 'aad-pod-identity sandbox Azure emulator CA' }];
  const ca = forge.pki.createCertificate();
  ca.publicKey = caKeys.publicKey;
  ca.serialNumber = serialNumber();
  ca.validity.notBefore = notBefore;
  ca.validity.notAfter = notAfter;
  ca.setSubject(caSubject);
  ca.setIssuer(caSubject);
  ca.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  ca.sign(caKeys.privateKey, forge.md.sha256.create());

  const altNames: { type: number; value?: string; ip?: string }[] = [
    { type: 2, value: 'localhost' },
    { type: 7, ip: '127.0.0.1' },
  ];
  for (const host of extraHosts) {
    if (host === 'localhost' || host === '127.0.0.1' || host === '' || host === '0.0.0.0') continue;
    altNames.push(isIP(host) === 4 ? { type: 7, ip: host } : { type: 2, value: host });
  }
  const server = forge.pki.createCertificate();
  server.publicKey = serverKeys.publicKey;
  server.serialNumber = serialNumber();
  server.validity.notBefore = notBefore;
  server.validity.notAfter = notAfter;
  server.setSubject([{ name: 'commonName', value: 'localhost' }]);
  server.setIssuer(caSubject);
  server.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
  ]);
  server.sign(caKeys.privateKey, forge.md.sha256.create());

  return {
    caPem: forge.pki.certificateToPem(ca),
    certPem: forge.pki.certificateToPem(server),
    keyPem: forge.pki.privateKeyToPem(serverKeys.privateKey),
  };
}

function rsaKeyPair(): { publicKey: forge.pki.rsa.PublicKey; privateKey: forge.pki.rsa.PrivateKey } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
  });
  return {
    publicKey: forge.pki.publicKeyFromPem(publicKey) as forge.pki.rsa.PublicKey,
    privateKey: forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey,
  };
}

// X.509 serials must be positive: a leading 0x01 byte keeps the high bit clear.
function serialNumber(): string {
  return `01${randomBytes(15).toString('hex')}`;
}
