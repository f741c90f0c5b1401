// PKCS#12 → PEM (private key + certificate chain), the form ClientCertificateCredential takes.
import forge from 'node-forge';
import { TokenError } from './types.js';

export interface PemCredential {
  /** PEM private key followed by the PEM certificates, leaf first. */
  readonly pem: string;
}

export function pkcs12ToPem(pfx: Buffer, password: string, where: string): PemCredential {
  let p12: forge.pkcs12.Pkcs12Pfx;
  try {
    const asn1 = forge.asn1.fromDer(forge.util.createBuffer(pfx.toString('binary')));
    p12 = forge.pkcs12.pkcs12FromAsn1(asn1, false, password);
  } catch (cause) {
    throw new TokenError('invalid', `${where}: certificate is not a PKCS#12 archive this password opens`, { cause });
  }
  const keyBags = [
    ...(p12.getBags({ bagType: forge.pki.oids.pkcs8ShroudedKeyBag })[forge.pki.oids.pkcs8ShroudedKeyBag] ?? []),
    ...(p12.getBags({ bagType: forge.pki.oids.keyBag })[forge.pki.oids.keyBag] ?? []),
  ];
  const certBags = p12.getBags({ bagType: forge.pki.oids.certBag })[forge.pki.oids.certBag] ?? [];
  const keyBag = keyBags.find((b) => b.key !== undefined);
  if (!keyBag?.key) throw new TokenError('invalid', `${where}: PKCS#12 archive holds no private key`);
  const certs = certBags.flatMap((b) => (b.cert ? [b.cert] : []));
  if (certs.length === 0) throw new TokenError('invalid', `${where}: PKCS#12 archive holds no certificate`);
  // The original required RSA keys (adal); node-forge only yields RSA keys anyway, so this is a type guard.
  const key = keyBag.key as forge.pki.rsa.PrivateKey;
  if (typeof key.n === 'undefined') throw new TokenError('invalid', `${where}: the private key is not RSA`);
  // Leaf first: the certificate whose public key matches the private key.
  const matchesKey = (c: forge.pki.Certificate): boolean => {
    const pub = c.publicKey as forge.pki.rsa.PublicKey;
    return pub.n !== undefined && pub.n.equals(key.n) && pub.e.equals(key.e);
  };
  const leaf = certs.find(matchesKey);
  if (!leaf) throw new TokenError('invalid', `${where}: no certificate in the archive matches its private key`);
  const ordered = [leaf, ...certs.filter((c) => c !== leaf)];
  const pem = forge.pki.privateKeyToPem(key) + ordered.map((c) => forge.pki.certificateToPem(c)).join('');
  return { pem };
}
