/**
 * Test helper: an OIDC token issuer on 127.0.0.1 (HTTPS, its own CA) that publishes a discovery document and a JWKS
 * the way the Kubernetes API server does, and signs service-account-like JWTs with RS256. Azure AD (the emulator)
 * fetches these for real when it checks a federated assertion.
 */
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { createCaAndServerCertificate } from '../../src/sandbox/tls.js';

export interface TestIssuer {
  /** The `iss` of its tokens, AKS-style with a trailing slash. */
  readonly issuer: string;
  readonly caPem: string;
  readonly kid: string;
  /** How many times each path was fetched. */
  readonly hits: Map<string, number>;
  sign(claims: TokenClaims, opts?: { key?: CryptoKey; kid?: string }): Promise<string>;
  /** Publishes a new key (kept alongside the old one, as AKS does during rotation); returns its key and kid. */
  rotate(): Promise<{ key: CryptoKey; kid: string }>;
  /** While on, every document request gets its headers and half a body, then nothing (a stuck issuer). */
  setStalled(on: boolean): void;
  stop(): Promise<void>;
}

export interface TokenClaims {
  readonly sub: string;
  readonly aud?: string | readonly string[];
  readonly iss?: string;
  /** Seconds from now (negative for the past). */
  readonly expiresIn?: number;
  readonly notBeforeIn?: number;
}

export async function startTestIssuer(): Promise<TestIssuer> {
  const tls = createCaAndServerCertificate({
    caCommonName: 'test OIDC issuer CA',
    serverCommonName: 'localhost',
    altNames: [
      { type: 2, value: 'localhost' },
      { type: 7, ip: '127.0.0.1' },
    ],
    backdateMs: 60_000,
    keyIdentifiers: true,
  });
  const keys: { kid: string; privateKey: CryptoKey; jwk: JWK }[] = [];
  const addKey = async (): Promise<{ key: CryptoKey; kid: string }> => {
    const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
    const kid = randomUUID().replaceAll('-', '');
    keys.push({ kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, use: 'sig', alg: 'RS256' } });
    return { key: privateKey, kid };
  };
  const first = await addKey();
  const hits = new Map<string, number>();
  let issuer = '';
  let stalled = false;
  const server: Server = createServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
    const path = new URL(req.url ?? '/', 'https://x').pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    if (stalled) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"issuer":');
      return;
    }
    if (path === '/oidc/.well-known/openid-configuration') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=3600' });
      res.end(
        JSON.stringify({
          issuer,
          jwks_uri: `${issuer}openid/v1/jwks`,
          response_types_supported: ['id_token'],
          subject_types_supported: ['public'],
          id_token_signing_alg_values_supported: ['RS256'],
        }),
      );
      return;
    }
    if (path === '/oidc/openid/v1/jwks') {
      res.writeHead(200, { 'content-type': 'application/jwk-set+json', 'cache-control': 'public, max-age=3600' });
      res.end(JSON.stringify({ keys: keys.map((k) => k.jwk) }));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  issuer = `https://127.0.0.1:${(server.address() as AddressInfo).port}/oidc/`;
  return {
    issuer,
    caPem: tls.caPem,
    kid: first.kid,
    hits,
    sign: async (claims, opts = {}) => {
      const now = Math.floor(Date.now() / 1000);
      const signer = keys[0];
      if (!signer) throw new Error('no key');
      return new SignJWT({ aud: (claims.aud ?? ['api://AzureADTokenExchange']) as string[] })
        .setProtectedHeader({ alg: 'RS256', kid: opts.kid ?? signer.kid })
        .setIssuer(claims.iss ?? issuer)
        .setSubject(claims.sub)
        .setIssuedAt(now)
        .setNotBefore(now + (claims.notBeforeIn ?? 0))
        .setExpirationTime(now + (claims.expiresIn ?? 3600))
        .sign(opts.key ?? signer.privateKey);
    },
    rotate: addKey,
    setStalled: (on) => {
      stalled = on;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
