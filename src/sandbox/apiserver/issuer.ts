// The service-account token issuer: one RS256 signing key, the JWT the real API server mints for a TokenRequest,
// and the OIDC discovery documents (`/.well-known/openid-configuration`, `/openid/v1/jwks`) that publish its key.

import { createHash, createPublicKey, generateKeyPair, randomUUID, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, exportJWK, jwtVerify, SignJWT, type JWK, type JWTPayload } from 'jose';
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

interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly kid: string;
  readonly jwk: JWK;
}

export class ServiceAccountIssuer {
  readonly issuer: string;
  readonly jwksUri: string;
  private readonly clock: Clock;
  /** Newest first: the first signs, all verify and are published. Made on first use, as RSA generation is slow. */
  private keys: Promise<SigningKey[]> | undefined;
  private readonly initialKey: KeyObject | undefined;

  constructor(opts: IssuerOptions) {
    this.issuer = opts.issuer;
    this.jwksUri = opts.jwksUri;
    this.clock = opts.clock;
    if (opts.signingKey && opts.signingKey.asymmetricKeyType !== 'rsa') {
      throw new Error(`service-account signing key must be RSA, got ${String(opts.signingKey.asymmetricKeyType)}`);
    }
    this.initialKey = opts.signingKey;
  }

  /**
   * Whether the real API server would publish discovery for this issuer: only an https URL with no query or
   * fragment (pkg/serviceaccount/openidmetadata.go); otherwise the two paths are not installed.
   */
  get servesDiscovery(): boolean {
    if (!URL.canParse(this.issuer) || this.issuer.includes('?') || this.issuer.includes('#')) return false;
    return new URL(this.issuer).protocol === 'https:';
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

  async jwks(): Promise<{ keys: JWK[] }> {
    return { keys: (await this.signingKeys()).map((k) => ({ ...k.jwk })) };
  }

  /** The kid of the key that signs new tokens. */
  async kid(): Promise<string> {
    return (await this.current()).kid;
  }

  async publicKeyPem(): Promise<string> {
    return (await this.current()).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  }

  /**
   * A new signing key (rotation, as `az aks oidc-issuer rotate-signing-keys`): new tokens carry its kid; with
   * `keepPrevious` the old keys stay published and keep verifying, as AKS keeps them for 24 h.
   */
  async rotate(opts: { keepPrevious?: boolean; key?: KeyObject } = {}): Promise<void> {
    const previous = await this.signingKeys();
    const next = await signingKeyOf(opts.key ?? (await newRsaKey()));
    this.keys = Promise.resolve(opts.keepPrevious === false ? [next] : [next, ...previous]);
  }

  /** Signs a token with the claims pkg/serviceaccount/claims.go builds; iat = nbf = now, in whole seconds. */
  async mint(input: TokenClaimsInput): Promise<MintedToken> {
    const key = await this.current();
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
    const token = await new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: key.kid }).sign(key.privateKey);
    return { token, payload, expiresAtMs: exp * 1000 };
  }

  /**
   * Verifies signature (by the key its kid names, among the published ones), issuer, time (at the issuer's clock)
   * and, when given, one of the audiences. Says nothing about whether bound objects still exist (see review).
   */
  async verify(token: string, audience?: string): Promise<ServiceAccountTokenPayload> {
    const keySet = createLocalJWKSet(await this.jwks());
    const { payload } = await jwtVerify(token, keySet, {
      issuer: this.issuer,
      algorithms: ['RS256'],
      currentDate: new Date(this.clock.now()),
      ...(audience !== undefined ? { audience } : {}),
    });
    return payload as ServiceAccountTokenPayload;
  }

  private signingKeys(): Promise<SigningKey[]> {
    this.keys ??= (async () => [await signingKeyOf(this.initialKey ?? (await newRsaKey()))])();
    return this.keys;
  }

  private async current(): Promise<SigningKey> {
    const [first] = await this.signingKeys();
    if (!first) throw new Error('service-account issuer has no signing key');
    return first;
  }
}

async function signingKeyOf(privateKey: KeyObject): Promise<SigningKey> {
  const publicKey = createPublicKey(privateKey);
  const kid = keyId(publicKey);
  const { n, e } = await exportJWK(publicKey);
  return { privateKey, publicKey, kid, jwk: { use: 'sig', kty: 'RSA', kid, alg: 'RS256', n, e } };
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
