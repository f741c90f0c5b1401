// Which identity a token is for, as NMI's node path must know it: IMDS's `client_id` field, else the JWT's own
// claim (`appid` in v1 tokens, `azp` in v2). Read only to decide whether to refuse; the signature is not NMI's to check.

import type { IssuedToken } from '../core/imds-body.js';

export function clientIdOfToken(token: Pick<IssuedToken, 'clientId' | 'accessToken'>): string | undefined {
  if (token.clientId !== undefined && token.clientId !== '') return token.clientId;
  const claims = jwtPayload(token.accessToken);
  for (const name of ['appid', 'azp']) {
    const value = claims?.[name];
    if (typeof value === 'string' && value !== '') return value;
  }
  return undefined;
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
