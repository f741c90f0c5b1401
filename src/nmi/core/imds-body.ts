// Token and error bodies in the shape IMDS answers and the Azure SDKs accept (upstream-behaviour §3.3, sdk-notes §2).

/** A token as NMI holds and serves it: the one shape from the token sources through the cache to the IMDS body. */
export interface Token {
  readonly accessToken: string;
  /** Epoch seconds. */
  readonly expiresOn: number;
  /** Epoch seconds. */
  readonly notBefore?: number;
  /** The resource it was issued for, as the upstream said. */
  readonly resource?: string;
  /** 'Bearer' when absent. */
  readonly tokenType?: string;
  /** Seconds, as the upstream reported it at acquisition time. */
  readonly expiresIn?: number;
  readonly clientId?: string;
}

export interface ImdsTokenBody {
  readonly access_token: string;
  readonly refresh_token: string;
  readonly expires_in: string;
  readonly expires_on: string;
  readonly not_before: string;
  readonly resource: string;
  readonly token_type: string;
  readonly client_id?: string;
}

/**
 * Numbers are strings, as IMDS and the original send them; `resource` echoes the request exactly so MSAL's cache
 * keys match (sdk-notes §2); `expires_in` is counted from `nowSeconds` and never negative.
 */
export function imdsTokenBody(token: Token, resource: string, nowSeconds: number): ImdsTokenBody {
  const expiresIn = Math.max(0, Math.floor(token.expiresOn - nowSeconds));
  return {
    access_token: token.accessToken,
    refresh_token: '',
    expires_in: String(expiresIn),
    expires_on: String(Math.floor(token.expiresOn)),
    not_before: String(Math.floor(token.notBefore ?? nowSeconds)),
    resource,
    token_type: token.tokenType ?? 'Bearer',
    ...(token.clientId !== undefined ? { client_id: token.clientId } : {}),
  };
}

/** `/host/token` wraps the first token with the identity's client ID, as the original. */
export function hostTokenBody(token: Token, resource: string, clientId: string, nowSeconds: number) {
  return { token: imdsTokenBody(token, resource, nowSeconds), clientid: clientId };
}

export function imdsErrorBody(error: string, description: string): { error: string; error_description: string } {
  return { error, error_description: description };
}

export const METADATA_HEADER_MISSING = imdsErrorBody('invalid_request', 'Required metadata header not specified');

/** What IMDS answers (400) for an identity the VM does not have: clients take it as final and move on. */
export const IDENTITY_NOT_FOUND = imdsErrorBody('invalid_request', 'Identity not found');
