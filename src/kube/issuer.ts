// The cluster's service-account issuer, as its tokens carry it in `iss`: federated credentials must name it byte for
// byte (a trailing slash matters), so it is read from the API server's own discovery document, never retyped.
import { errorMessage } from '../common/errors.js';
import type { KubeAccess } from './access.js';
import { getJson } from './list.js';

export class IssuerDiscoveryError extends Error {
  override readonly name = 'IssuerDiscoveryError';
}

/**
 * `issuer` of `GET /.well-known/openid-configuration` on the API server. The API server serves it only when its
 * issuer is an https URL (and callers need `system:service-account-issuer-discovery`, bound to every service account
 * by default); otherwise this throws an IssuerDiscoveryError saying the issuer must be configured explicitly.
 */
export async function discoverServiceAccountIssuer(kc: KubeAccess): Promise<string> {
  let text: unknown;
  try {
    // A raw GET (client-node's WellKnownApi would load its whole generated API into MIC).
    text = await getJson(kc, '/.well-known/openid-configuration');
  } catch (cause) {
    const code = typeof cause === 'object' && cause !== null ? (cause as { code?: unknown }).code : undefined;
    const why =
      code === 404
        ? 'the API server publishes no service-account issuer discovery (its issuer is not an https URL)'
        : code === 401 || code === 403
          ? 'the API server refused the discovery document (bind system:service-account-issuer-discovery to MIC)'
          : `reading the API server's discovery document failed: ${errorMessage(cause)}`;
    throw new IssuerDiscoveryError(`cannot discover the service-account issuer: ${why}; configure the issuer URL explicitly`, { cause });
  }
  const doc: unknown = typeof text === 'string' ? safeParse(text) : text;
  const issuer = typeof doc === 'object' && doc !== null ? (doc as Record<string, unknown>)['issuer'] : undefined;
  if (typeof issuer !== 'string' || issuer === '') {
    throw new IssuerDiscoveryError('the API server discovery document has no issuer; configure the issuer URL explicitly');
  }
  return issuer;
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
