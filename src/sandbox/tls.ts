// A throwaway CA and one server certificate it signs, shared by the sandbox emulators' HTTPS servers.
// Keys come from node:crypto (native, fast); node-forge only builds and signs the X.509 structures.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import forge from 'node-forge';
import { realClock } from '../common/clock.js';

/** PEM material for an HTTPS server, signed by a CA generated for this run. */
export interface TlsMaterial {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** A subjectAltName entry: a DNS name or an IP address. */
export type AltName = { readonly type: 2; readonly value: string } | { readonly type: 7; readonly ip: string };

export interface CertificateSpec {
  readonly caCommonName: string;
  readonly serverCommonName: string;
  readonly altNames: readonly AltName[];
  /** How far notBefore lies in the past, to tolerate clock skew between processes. */
  readonly backdateMs: number;
  /** Adds subjectKeyIdentifier and authorityKeyIdentifier to the server certificate. */
  readonly keyIdentifiers?: boolean;
}

export function createCaAndServerCertificate(spec: CertificateSpec): TlsMaterial {
  const caKeys = rsaKeyPair();
  const serverKeys = rsaKeyPair();
  const now = realClock.now();
  const notBefore = new Date(now - spec.backdateMs);
  const notAfter = new Date(now + 365 * 24 * 3600_000);

  const caSubject = [{ name: 'commonName', value: spec.caCommonName }];
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

  const server = forge.pki.createCertificate();
  server.publicKey = serverKeys.publicKey;
  server.serialNumber = serialNumber();
  server.validity.notBefore = notBefore;
  server.validity.notAfter = notAfter;
  server.setSubject([{ name: 'commonName', value: spec.serverCommonName }]);
  server.setIssuer(caSubject);
  server.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: spec.altNames },
    ...(spec.keyIdentifiers
      ? [
          { name: 'subjectKeyIdentifier' },
          { name: 'authorityKeyIdentifier', keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
        ]
      : []),
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
