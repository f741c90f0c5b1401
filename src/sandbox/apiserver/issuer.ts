// The service-account token issuer: one RS256 signing key, the JWT the real API server mints for a TokenRequest,
// and the OIDC discovery documents (`/.well-known/openid-configuration`, `/openid/v1/jwks`) that publish its key.

import { createHash, createPublicKey, generateKeyPair, randomUUID, type KeyObject } from 'node:crypto';
import { exportJWK, jwtVerify, SignJWT, type JWK, type JWTPayload } from 'jose';
import type { Clock } from '../../common/clock.js';
import type { JsonObject } from './json.js';

/** `{name, uid}` as the `kubernetes.io` claim carries a bound object (uid omitted when unknown, as for a missing Node). */
export interface ObjectClaim {
  name: string;
  uid?: string;
}

export interface TokenClaimsInput {
  namespace: string;
  serviceAccount: { name: string; uid: string };
  audiences: readonly string[];
  expirationSeconds: number;
  pod?: ObjectClaim;
  secret?: ObjectClaim;
  node?: ObjectClaim;
}

/** The `kubernetes.io` private claim of a service-account token (pkg/serviceaccount/claims.go). */
export interface KubernetesClaim {
  namespace: string;
  serviceaccount: { name: string; uid: string };
  pod?: ObjectClaim;
  secret?: ObjectClaim;
  node?: ObjectClaim;
}

export interface ServiceAccountTokenPayload extends JWTPayload {
  iss: string;
  sub: string;
  aud: string[];
  exp: number;
  iat: number;
  nbf: number;
  jti: string;
  'kubernetes.io': KubernetesClaim;
}

export interface MintedToken {
  token: string;
  payload: ServiceAccountTokenPayload;
  /** Milliseconds since the epoch, whole seconds. */
  expiresAtMs: number;
}

export interface IssuerOptions {
  /** `--service-account-issuer`: the `iss` of every token and the discovery document's `issuer`. */
  issuer: string;
  /** `--service-account-jwks-uri`; default `<apiserver URL>/openid/v1/jwks`. */
  jwksUri: string;
  clock: Clock;
  /** An RSA private key to sign with; a fresh 2048-bit key when absent. */
  signingKey?: KeyObject;
}

export const DISCOVERY_PATH = '/.well-known/openid-configuration';
export const JWKS_PATH = '/openid/v1/jwks';

export class ServiceAccountIssuer {
  private constructor(
    readonly issuer: string,
    readonly jwksUri: string,
    readonly kid: string,
    readonly publicJwk: JWK,
    private readonly privateKey: KeyObject,
    readonly publicKey: KeyObject,
    private readonly clock: Clock,
  ) {}

  static async create(opts: IssuerOptions): Promise<ServiceAccountIssuer> {
    const privateKey = opts.signingKey ?? (await newRsaKey());
    if (privateKey.asymmetricKeyType !== 'rsa') throw new Error(`service-account signing key must be RSA, got ${String(privateKey.asymmetricKeyType)}`);
    const publicKey = createPublicKey(privateKey);
    const kid = keyId(publicKey);
    const jwk = await exportJWK(publicKey);
    const publicJwk: JWK = { use: 'sig', kty: 'RSA', kid, alg: 'RS256', n: jwk.n, e: jwk.e };
    return new ServiceAccountIssuer(opts.issuer, opts.jwksUri, kid, publicJwk, privateKey, publicKey, opts.clock);
  }

  /**
   * Whether the real API server would publish discovery for this issuer: only an https URL with no query or
   * fragment (pkg/serviceaccount/openidmetadata.go); otherwise the two paths are not installed.
   */
  get servesDiscovery(): boolean {
    try {
      const u = new URL(this.issuer);
      return u.protocol === 'https:' && u.search === '' && u.hash === '' && !this.issuer.includes('?') && !this.issuer.includes('#');
    } catch {
      return false;
    }
  }

  discoveryDocument(): JsonObject {
    return {
      issuer: this.issuer,
      jwks_uri: this.jwksUri,
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
    };
  }

  jwks(): { keys: JWK[] } {
    return { keys: [{ ...this.publicJwk }] };
  }

  /** Signs a token with the claims pkg/serviceaccount/claims.go builds; iat = nbf = now, in whole seconds. */
  async mint(input: TokenClaimsInput): Promise<MintedToken> {
    const now = Math.floor(this.clock.now() / 1000);
    const exp = now + input.expirationSeconds;
    const kube: KubernetesClaim = { namespace: input.namespace, serviceaccount: { ...input.serviceAccount } };
    if (input.node) kube.node = { ...input.node };
    if (input.pod) kube.pod = { ...input.pod };
    if (input.secret) kube.secret = { ...input.secret };
    const payload: ServiceAccountTokenPayload = {
      aud: [...input.audiences],
      exp,
      iat: now,
      iss: this.issuer,
      jti: randomUUID(),
      'kubernetes.io': kube,
      nbf: now,
      sub: `system:serviceaccount:${input.namespace}:${input.serviceAccount.name}`,
    };
    const token = await new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: this.kid }).sign(this.privateKey);
    return { token, payload, expiresAtMs: exp * 1000 };
  }

  /**
   * Verifies signature, issuer, time (at the issuer's clock) and, when given, one of the audiences. Says nothing
   * about whether the bound objects still exist: that is ApiServerHandle.serviceAccountIssuer.review's job.
   */
  async verify(token: string, audience?: string): Promise<ServiceAccountTokenPayload> {
    const { payload } = await jwtVerify(token, this.publicKey, {
      issuer: this.issuer,
      algorithms: ['RS256'],
      currentDate: new Date(this.clock.now()),
      ...(audience !== undefined ? { audience } : {}),
    });
    return payload as ServiceAccountTokenPayload;
  }
}

/** The API server's key id: unpadded base64url of SHA-256 over the PKIX DER public key (pkg/serviceaccount/jwt.go). */
export function keyId(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('base64url');
}

function newRsaKey(): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: 2048 }, (err, _pub, priv) => (err ? reject(err) : resolve(priv)));
  });
}
