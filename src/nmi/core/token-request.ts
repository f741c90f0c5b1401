// Parses the IMDS token query a pod sends (upstream-behaviour §3.3) into our own type, refusing anything ambiguous.

export interface TokenRequest {
  readonly resource: string;
  /** Requested user-assigned identity by client ID (`client_id`), if any. */
  readonly clientId?: string;
  /** Requested user-assigned identity by resource ID (`msi_res_id`, or `mi_res_id` when that is empty). */
  readonly resourceId?: string;
}

export type ParsedTokenRequest =
  | { readonly ok: true; readonly request: TokenRequest }
  | { readonly ok: false; readonly status: 400; readonly reason: string };

const IDENTITY_PARAMS = ['client_id', 'msi_res_id', 'mi_res_id'] as const;
// Selectors IMDS understands but an AzureIdentity cannot be matched by: serving some other identity would be a lie.
const UNSUPPORTED_SELECTORS = ['object_id', 'principal_id'] as const;
const MAX_PARAM_LENGTH = 2048;

/** `query` is the raw query string without the leading `?`. */
export function parseTokenRequest(query: string): ParsedTokenRequest {
  let params: URLSearchParams;
  try {
    params = new URLSearchParams(query);
  } catch {
    return deny('query string cannot be parsed');
  }
  for (const name of ['resource', ...IDENTITY_PARAMS]) {
    const values = params.getAll(name);
    if (values.length > 1) return deny(`parameter ${name} is given more than once`);
    if ((values[0] ?? '').length > MAX_PARAM_LENGTH) return deny(`parameter ${name} is too long`);
  }
  for (const name of UNSUPPORTED_SELECTORS) {
    if (params.has(name)) return deny(`parameter ${name} is not supported: use client_id or msi_res_id`);
  }
  const resource = (params.get('resource') ?? '').trim();
  if (resource === '') return deny('parameter resource cannot be empty');
  if (hasControlCharacters(resource)) return deny('parameter resource contains control characters');

  const clientId = nonEmpty(params.get('client_id'));
  const resourceId = nonEmpty(params.get('msi_res_id')) ?? nonEmpty(params.get('mi_res_id'));
  if (clientId !== undefined && resourceId !== undefined) {
    return deny('only one of client_id and msi_res_id/mi_res_id may be given');
  }
  if (nonEmpty(params.get('msi_res_id')) !== undefined && nonEmpty(params.get('mi_res_id')) !== undefined) {
    if (params.get('msi_res_id') !== params.get('mi_res_id')) {
      return deny('msi_res_id and mi_res_id name different identities');
    }
  }
  for (const value of [clientId, resourceId]) {
    if (value !== undefined && hasControlCharacters(value)) return deny('identity parameter contains control characters');
  }
  return {
    ok: true,
    request: {
      resource,
      ...(clientId !== undefined ? { clientId } : {}),
      ...(resourceId !== undefined ? { resourceId } : {}),
    },
  };
}

function deny(reason: string): ParsedTokenRequest {
  return { ok: false, status: 400, reason };
}

function nonEmpty(value: string | null): string | undefined {
  const trimmed = value?.trim();
  return trimmed === undefined || trimmed === '' ? undefined : trimmed;
}

function hasControlCharacters(value: string): boolean {
  return /[\u0000-\u001f\u007f]/.test(value);
}
