// Parses the IMDS token query a pod sends (upstream-behaviour §3.3) into our own type, refusing anything ambiguous.

export interface TokenRequest {
  readonly resource: string;
  /** Requested user-assigned identity by client ID (`client_id`), if any. */
  readonly clientId?: string;
  /** Requested user-assigned identity by resource ID (`msi_res_id`, or `mi_res_id` when that is empty). */
  readonly resourceId?: string;
  /** Requested identity by its object (principal) ID (`object_id`), as IMDS accepts it. */
  readonly objectId?: string;
}

export type ParsedTokenRequest =
  | { readonly ok: true; readonly request: TokenRequest }
  | { readonly ok: false; readonly status: 400; readonly reason: string };

const IDENTITY_PARAMS = ['client_id', 'msi_res_id', 'mi_res_id', 'object_id'] as const;
// App Service's alias of object_id; IMDS does not document it, and guessing what a client meant by it could serve
// an identity it did not ask for.
const UNSUPPORTED_SELECTORS = ['principal_id'] as const;
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
    if (params.has(name)) return deny(`parameter ${name} is not supported: use client_id, msi_res_id or object_id`);
  }
  const resource = (params.get('resource') ?? '').trim();
  if (resource === '') return deny('parameter resource cannot be empty');
  if (hasControlCharacters(resource)) return deny('parameter resource contains control characters');

  const clientId = nonEmpty(params.get('client_id'));
  const resourceId = nonEmpty(params.get('msi_res_id')) ?? nonEmpty(params.get('mi_res_id'));
  const objectId = nonEmpty(params.get('object_id'));
  if ([clientId, resourceId, objectId].filter((v) => v !== undefined).length > 1) {
    return deny('only one of client_id, msi_res_id/mi_res_id and object_id may be given');
  }
  if (nonEmpty(params.get('msi_res_id')) !== undefined && nonEmpty(params.get('mi_res_id')) !== undefined) {
    if (params.get('msi_res_id') !== params.get('mi_res_id')) {
      return deny('msi_res_id and mi_res_id name different identities');
    }
  }
  for (const value of [clientId, resourceId, objectId]) {
    if (value !== undefined && hasControlCharacters(value)) return deny('identity parameter contains control characters');
  }
  return {
    ok: true,
    request: {
      resource,
      ...(clientId !== undefined ? { clientId } : {}),
      ...(resourceId !== undefined ? { resourceId } : {}),
      ...(objectId !== undefined ? { objectId } : {}),
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
