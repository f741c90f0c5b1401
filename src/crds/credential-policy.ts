// Which credentials a service-principal AzureIdentity (type 1/2) may make NMI use: its clientPassword Secret must be
// in the identity's own namespace, and its adEndpoint must be an authority the cluster admin trusts. MIC (skip with
// a reason and event), NMI (deny before any Secret read or connection) and explain share these rules. Pure: the
// callers pass the allowed settings in as data (the clouds' authorities live in src/azure, the flags in the configs).

import type { AzureIdentity, SecretRef } from './types.js';

/** The admin's settings, as MIC, NMI and explain receive them from their flags. */
export interface CredentialPolicy {
  /** `--allow-cross-namespace-secrets`: a clientPassword Secret may be in another namespace than its identity. */
  readonly allowCrossNamespaceSecrets: boolean;
  /**
   * Normalised https origins (see `authorityOrigin`) an adEndpoint may name: the known clouds' AAD authorities,
   * the configured default authority, and `--allowed-ad-endpoints`.
   */
  readonly allowedAuthorities: ReadonlySet<string>;
}

export const ALLOW_CROSS_NAMESPACE_SECRETS_FLAG = '--allow-cross-namespace-secrets';
export const ALLOWED_AD_ENDPOINTS_FLAG = '--allowed-ad-endpoints';

export type CredentialRefusalCode = 'CrossNamespaceSecret' | 'AdEndpointNotAllowed';

export interface CredentialRefusal {
  readonly code: CredentialRefusalCode;
  /** For logs, events and explain (admins and the identity's own namespace): names the flag that would allow it. */
  readonly reason: string;
}

export type AuthorityParse = { readonly ok: true; readonly origin: string } | { readonly ok: false; readonly reason: string };

/**
 * An authority URL as the origin it connects to: `https://host[:port]`, host lower-cased, the default port dropped.
 * Anything else than https, a URL with user information, or text that is not a URL is refused.
 */
export function authorityOrigin(value: string): AuthorityParse {
  const text = value.trim();
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { ok: false, reason: `"${text}" is not a URL` };
  }
  if (url.protocol !== 'https:') return { ok: false, reason: `"${text}" does not use https` };
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'an authority URL must not carry user information' };
  if (url.hostname === '') return { ok: false, reason: `"${text}" has no host` };
  return { ok: true, origin: url.origin };
}

/** `--allowed-ad-endpoints` entries as normalised origins; a non-https URL or one with user information is an error. */
export function parseAllowedAdEndpoints(values: readonly string[], errors: string[]): readonly string[] {
  const out: string[] = [];
  for (const value of values) {
    if (value.trim() === '') continue;
    const parsed = authorityOrigin(value);
    if (parsed.ok) out.push(parsed.origin);
    else errors.push(`${ALLOWED_AD_ENDPOINTS_FLAG}: ${parsed.reason}`);
  }
  return out;
}

/** The allowed-authority set from URLs (clouds, default, flag); entries that do not parse are left out. */
export function allowedAuthoritySet(urls: Iterable<string>): ReadonlySet<string> {
  const out = new Set<string>();
  for (const url of urls) {
    const parsed = authorityOrigin(url);
    if (parsed.ok) out.add(parsed.origin);
  }
  return out;
}

/** Why the identity's clientPassword Secret may not be used from its namespace, or undefined when it may. */
export function secretNamespaceRefusal(
  identityNamespace: string,
  ref: SecretRef | null | undefined,
  policy: Pick<CredentialPolicy, 'allowCrossNamespaceSecrets'>,
): CredentialRefusal | undefined {
  if (ref === null || ref === undefined || policy.allowCrossNamespaceSecrets) return undefined;
  if (ref.namespace === identityNamespace) return undefined;
  return {
    code: 'CrossNamespaceSecret',
    reason:
      `spec.clientPassword names a Secret in namespace ${ref.namespace || '(empty)'}, not the identity's own namespace ` +
      `${identityNamespace}; move the Secret into ${identityNamespace}, or start MIC and NMI with ` +
      `${ALLOW_CROSS_NAMESPACE_SECRETS_FLAG} to allow references across namespaces`,
  };
}

/** Why the identity's adEndpoint may not be used, or undefined when it is empty (the default) or allowed. */
export function adEndpointRefusal(
  adEndpoint: string | undefined,
  policy: Pick<CredentialPolicy, 'allowedAuthorities'>,
): CredentialRefusal | undefined {
  if (adEndpoint === undefined || adEndpoint.trim() === '') return undefined;
  const parsed = authorityOrigin(adEndpoint);
  if (parsed.ok && policy.allowedAuthorities.has(parsed.origin)) return undefined;
  const why = parsed.ok ? `${parsed.origin} is not a known cloud authority nor allowed` : parsed.reason;
  return {
    code: 'AdEndpointNotAllowed',
    reason:
      `spec.adEndpoint is refused: ${why}; a cluster admin may allow an authority with ` +
      `${ALLOWED_AD_ENDPOINTS_FLAG}=https://host on MIC and NMI`,
  };
}

/** Every refusal for a service-principal identity (types 1 and 2); managed identities never use either field. */
export function credentialRefusals(identity: AzureIdentity, policy: CredentialPolicy): CredentialRefusal[] {
  if (identity.type !== 1 && identity.type !== 2) return [];
  const out: CredentialRefusal[] = [];
  const secret = secretNamespaceRefusal(identity.namespace, identity.clientPassword, policy);
  if (secret) out.push(secret);
  const authority = adEndpointRefusal(identity.adEndpoint, policy);
  if (authority) out.push(authority);
  return out;
}
