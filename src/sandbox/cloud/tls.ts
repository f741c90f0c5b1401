import { isIP } from 'node:net';
import { createCaAndServerCertificate, type AltName, type TlsMaterial } from '../tls.js';

export type { TlsMaterial } from '../tls.js';

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

/** Generates a CA and a server certificate for 127.0.0.1, localhost and any extra host names. */
export function createTlsMaterial(extraHosts: readonly string[] = []): TlsMaterial {
  const altNames: AltName[] = [
    { type: 2, value: 'localhost' },
    { type: 7, ip: '127.0.0.1' },
  ];
  for (const host of extraHosts) {
    if (host === 'localhost' || host === '127.0.0.1' || host === '' || host === '0.0.0.0') continue;
    altNames.push(isIP(host) === 4 ? { type: 7, ip: host } : { type: 2, value: host });
  }
  return createCaAndServerCertificate({
    caCommonName: 'aad-pod-identity sandbox Azure emulator CA',
    serverCommonName: 'localhost',
    altNames,
    backdateMs: 60_000, // tolerate small clock skew between processes
    keyIdentifiers: true,
  });
}
