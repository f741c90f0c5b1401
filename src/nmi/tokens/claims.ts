// Which identity a token is for, as NMI's node path must know it: IMDS's `client_id` field, else the JWT's own
// claim (`appid` in v1 tokens, `azp` in v2), and the managed identity's resource ID (`xms_mirid`). Read only to decide
// whether to refuse; the signature is not NMI's to check.

import type { Token } from '../core/imds-body.js';
import type { TokenIdentity } from '../core/node-path.js';

export function tokenIdentityOf(token: Pick<Token, 'clientId' | 'accessToken'>): TokenIdentity {
  const claims = jwtPayload(token.accessToken) ?? {};
  const clientId = nonEmpty(token.clientId) ?? nonEmpty(claims['appid']) ?? nonEmpty(claims['azp']);
  const resourceId = nonEmpty(claims['xms_mirid']);
  return { ...(clientId !== undefined ? { clientId } : {}), ...(resourceId !== undefined ? { resourceId } : {}) };
}

/** The object (principal) ID a token is for: its `oid` claim; undefined for a token that is not a readable JWT. */
export function tokenObjectIdOf(token: Pick<Token, 'accessToken'>): string | undefined {
  return nonEmpty(jwtPayload(token.accessToken)?.['oid']);
}

function nonEmpty(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function jwtPayload(jwt: string): Record<string, unknown> | undefined {
  const parts = jwt.split('.');
  if (parts.length !== 3 || parts[1] === undefined) return undefined;
  try {
    const json: unknown = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    return typeof json === 'object' && json !== null && !Array.isArray(json) ? (json as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
