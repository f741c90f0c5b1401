import { generateKeyPair, randomUUID, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { SignJWT, compactVerify, exportJWK, decodeJwt, type JWK, type JWTPayload } from 'jose';
import { realClock } from '../../common/clock.js';

/** Claims the emulator puts in every access token (AAD v1 shape, as ARM and most resources receive). */
export interface AccessTokenClaims extends JWTPayload {
  readonly aud: string;
  readonly iss: string;
  readonly appid: string;
  readonly azp: string;
  readonly oid: string;
  readonly sub: string;
  readonly tid: string;
  readonly idtyp: 'app';
  readonly xms_mirid?: string;
}

/** Who a token was issued to, without the audience and times. */
export interface TokenSubject {
  readonly appId: string;
  readonly objectId: string;
  readonly tenantId: string;
  /** Resource ID of the managed identity (user-assigned identity ID, or the VM/VMSS for a system identity). */
  readonly managedIdentityResourceId?: string;
}

export interface IssuedToken {
  readonly accessToken: string;
  readonly issuedAt: number; // epoch seconds
  readonly expiresOn: number; // epoch seconds
}

/** The emulator's JWKS (jose's JSONWebKeySet shape, usable with createLocalJWKSet). */
export interface JsonWebKeySet {
  keys: JWK[];
}

export type VerifyResult =
  | { readonly ok: true; readonly claims: AccessTokenClaims }
  | { readonly ok: false; readonly reason: 'malformed' | 'signature' | 'expired' | 'not_yet_valid'; readonly detail: string };

/** Signs access tokens with a key generated per emulator run, and verifies the ones it issued. */
export class TokenSigner {
  readonly keyId: string;
  readonly #privateKey: KeyObject;
  readonly #publicKey: KeyObject;
  #jwks: JsonWebKeySet | undefined;

  private constructor(privateKey: KeyObject, publicKey: KeyObject) {
    this.#privateKey = privateKey;
    this.#publicKey = publicKey;
    this.keyId = randomUUID().replaceAll('-', '');
  }

  /** A signer with a fresh key (generated off the main thread). */
  static async create(): Promise<TokenSigner> {
    const { privateKey, publicKey } = await promisify(generateKeyPair)('rsa', { modulusLength: 2048 });
    return new TokenSigner(privateKey, publicKey);
  }

  async issue(subject: TokenSubject, audience: string, lifetimeSeconds: number, nowMs = realClock.now()): Promise<IssuedToken> {
    const iat = Math.floor(nowMs / 1000);
    const exp = iat + lifetimeSeconds;
    const claims: Record<string, unknown> = {
      aud: audience,
      iss: `https://sts.windows.net/${subject.tenantId}/`,
      appid: subject.appId,
      azp: subject.appId,
      appidacr: subject.managedIdentityResourceId ? '2' : '1',
      oid: subject.objectId,
      sub: subject.objectId,
      tid: subject.tenantId,
      idtyp: 'app',
      uti: randomUUID().replaceAll('-', ''),
      ver: '1.0',
      iat,
      nbf: iat - 5 * 60, // AAD back-dates nbf by five minutes
      exp,
    };
    if (subject.managedIdentityResourceId) claims.xms_mirid = subject.managedIdentityResourceId;
    const accessToken = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: this.keyId, x5t: this.keyId })
      .sign(this.#privateKey);
    return { accessToken, issuedAt: iat, expiresOn: exp };
  }

  async verify(token: string, nowMs = realClock.now()): Promise<VerifyResult> {
    let payload: JWTPayload;
    try {
      payload = decodeJwt(token);
    } catch (err) {
      return { ok: false, reason: 'malformed', detail: (err as Error).message };
    }
    try {
      // Signature only: times are checked below so expiry can be reported as ARM words it.
      await compactVerify(token, this.#publicKey, { algorithms: ['RS256'] });
    } catch (err) {
      return { ok: false, reason: 'signature', detail: (err as Error).message };
    }
    const now = Math.floor(nowMs / 1000);
    if (typeof payload.exp !== 'number' || payload.exp <= now) {
      return { ok: false, reason: 'expired', detail: String(payload.exp) };
    }
    if (typeof payload.nbf === 'number' && payload.nbf > now + 300) {
      return { ok: false, reason: 'not_yet_valid', detail: String(payload.nbf) };
    }
    const claims = asAccessTokenClaims(payload);
    return claims ? { ok: true, claims } : { ok: false, reason: 'malformed', detail: 'missing claims' };
  }

  async jwks(): Promise<JsonWebKeySet> {
    if (!this.#jwks) {
      const jwk = await exportJWK(this.#publicKey);
      this.#jwks = { keys: [{ ...jwk, kty: 'RSA', use: 'sig', kid: this.keyId, x5t: this.keyId, alg: 'RS256' }] };
    }
    return this.#jwks;
  }
}

/** Decodes an access token without verifying it (for tests). */
export function decodeToken(jwt: string): AccessTokenClaims & Record<string, unknown> {
  const payload = decodeJwt(jwt);
  const claims = asAccessTokenClaims(payload);
  if (!claims) throw new Error('not an access token issued by the Azure emulator');
  return { ...payload, ...claims };
}

function asAccessTokenClaims(p: JWTPayload): AccessTokenClaims | undefined {
  const str = (k: string): string | undefined => (typeof p[k] === 'string' ? (p[k] as string) : undefined);
  const aud = typeof p.aud === 'string' ? p.aud : Array.isArray(p.aud) ? p.aud[0] : undefined;
  const iss = str('iss');
  const appid = str('appid');
  const oid = str('oid');
  const tid = str('tid');
  if (!aud || !iss || !appid || !oid || !tid) return undefined;
  const mirid = str('xms_mirid');
  return {
    ...p,
    aud,
    iss,
    appid,
    azp: str('azp') ?? appid,
    oid,
    sub: str('sub') ?? oid,
    tid,
    idtyp: 'app',
    ...(mirid ? { xms_mirid: mirid } : {}),
  };
}
