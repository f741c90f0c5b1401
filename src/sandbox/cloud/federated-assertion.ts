import { compactVerify, decodeJwt, decodeProtectedHeader, importJWK, type JWK, type JWTPayload } from 'jose';
import type { Clock } from '../../common/clock.js';
import type { IssuerKeys } from './issuer-keys.js';
import type { FederatedCredential } from './world.js';

/** An Azure AD refusal: HTTP status, OAuth `error`, AADSTS number and the description's text. */
export interface AadRefusal {
  readonly status: number;
  readonly error: string;
  readonly code: number;
  readonly message: string;
}

export interface FederatedAssertionContext {
  readonly clock: Clock;
  readonly keys: IssuerKeys;
  /** Allowed clock difference for `nbf`/`exp`, in seconds. */
  readonly skewSeconds: number;
  /** A credential counts for Azure AD only this long after it was written (the directory's propagation). */
  readonly propagationMs: () => number;
}

/**
 * Azure AD's check of a federated assertion presented for a user-assigned identity (client credentials with
 * `client_assertion`): a credential whose issuer, subject and audience match the token, the issuer's published key,
 * the signature, and the time window. Returns undefined when the assertion is good.
 */
export async function checkFederatedAssertion(
  ctx: FederatedAssertionContext,
  credentials: readonly FederatedCredential[],
  assertion: string,
): Promise<AadRefusal | undefined> {
  let payload: JWTPayload;
  let kid: string | undefined;
  try {
    payload = decodeJwt(assertion);
    kid = decodeProtectedHeader(assertion).kid;
  } catch (err) {
    return invalidJwt(`JWT token is invalid or malformed. ${(err as Error).message}`);
  }
  const iss = typeof payload.iss === 'string' ? payload.iss : '';
  const sub = typeof payload.sub === 'string' ? payload.sub : '';
  const aud = typeof payload.aud === 'string' ? [payload.aud] : Array.isArray(payload.aud) ? payload.aud : [];
  const now = ctx.clock.now();
  const visible = credentials.filter((c) => now - c.changedAt >= ctx.propagationMs());
  const matches = (c: FederatedCredential): boolean => c.issuer === iss && c.subject === sub && c.audiences.some((a) => aud.includes(a));
  if (!visible.some(matches) && credentials.some(matches)) {
    // Written, not yet propagated: the directory answers as if there were none (Entra docs: AADSTS70021).
    return {
      status: 400,
      error: 'invalid_request',
      code: 70021,
      message: `AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '${iss}'. Assertion Subject: '${sub}'. Assertion Audience: '${aud.join(',')}'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation`,
    };
  }
  const byIssuer = visible.filter((c) => c.issuer === iss);
  if (byIssuer.length === 0) {
    return invalidClient(
      700211,
      `AADSTS700211: No matching federated identity record found for presented assertion issuer '${iss}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation`,
    );
  }
  const bySubject = byIssuer.filter((c) => c.subject === sub);
  if (bySubject.length === 0) {
    if (byIssuer.some((c) => c.subject.toLowerCase() === sub.toLowerCase())) {
      return invalidClient(
        7002138,
        `AADSTS7002138: No matching federated identity record found for presented assertion subject '${sub}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. See documentation at: https://learn.microsoft.com/entra/workload-id/workload-identity-federation.`,
      );
    }
    return invalidClient(
      700213,
      `AADSTS700213: No matching federated identity record found for presented assertion subject '${sub}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation`,
    );
  }
  if (!bySubject.some((c) => c.audiences.some((a) => aud.includes(a)))) {
    return invalidClient(
      700212,
      `AADSTS700212: No matching federated identity record found for presented assertion audience '${aud.join(',')}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation`,
    );
  }

  const lookup = await ctx.keys.keysFor(iss, kid);
  if (!lookup.ok) {
    if (lookup.reason === 'unreachable') {
      return { status: 400, error: 'invalid_request', code: 90061, message: 'AADSTS90061: Request to External OIDC endpoint failed.' };
    }
    return invalidClient(
      7000272,
      `AADSTS7000272: The certificate with identifier ${kid ?? ''} used to sign the federated credential could not be found in the metadata of identity provider ${iss}. Please validate that your Identity Provider's metadata exposes the key used to sign the incoming token.`,
    );
  }
  if (!(await verifiesWithOneOf(assertion, lookup.keys))) {
    return invalidClient(700027, 'AADSTS700027: Client assertion failed signature validation.');
  }

  const nowSec = now / 1000;
  const exp = typeof payload.exp === 'number' ? payload.exp : undefined;
  const nbf = typeof payload.nbf === 'number' ? payload.nbf : typeof payload.iat === 'number' ? payload.iat : undefined;
  if (exp === undefined || exp + ctx.skewSeconds <= nowSec || (nbf !== undefined && nbf - ctx.skewSeconds > nowSec)) {
    const from = nbf === undefined ? '' : `, assertion valid from ${aadTime(nbf * 1000)}`;
    return invalidClient(
      700024,
      `AADSTS700024: Client assertion is not within its valid time range. Current time: ${aadTime(now)}${from}, expiry time of assertion ${exp === undefined ? '' : aadTime(exp * 1000)}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .`,
    );
  }
  return undefined;
}

async function verifiesWithOneOf(assertion: string, keys: readonly JWK[]): Promise<boolean> {
  for (const jwk of keys) {
    try {
      const key = await importJWK({ ...jwk, alg: 'RS256' }, 'RS256');
      await compactVerify(assertion, key, { algorithms: ['RS256'] });
      return true;
    } catch {
      // try the next key
    }
  }
  return false;
}

function invalidClient(code: number, message: string): AadRefusal {
  return { status: 401, error: 'invalid_client', code, message };
}

function invalidJwt(text: string): AadRefusal {
  return { status: 400, error: 'invalid_request', code: 50027, message: `AADSTS50027: ${text}` };
}

/** Azure AD's time format in AADSTS700024: ISO 8601 with seven fraction digits. */
function aadTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$10000Z');
}
