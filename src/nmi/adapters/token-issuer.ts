// Connects the handlers' TokenIssuer port to the token provider (cache, IMDS, service principals).

import type { AzureIdentity } from '../../crds/types.js';
import type { TokenIssuer } from '../ports.js';
import {
  tokenErrorHttpStatus,
  tokenErrorIsIdentityNotFound,
  tokenErrorPublicMessage,
  tokenErrorRetryAfterSeconds,
  tokenRequestIdentityFrom,
  type TokenProvider,
  type TokenRequestIdentity,
} from '../tokens/index.js';

export function tokenIssuerFrom(provider: TokenProvider): TokenIssuer {
  // The informers hand out a new object for every change, so an identity object's request form never goes stale.
  const requestForms = new WeakMap<AzureIdentity, TokenRequestIdentity>();
  const formOf = (identity: AzureIdentity): TokenRequestIdentity => {
    let form = requestForms.get(identity);
    if (form === undefined) requestForms.set(identity, (form = tokenRequestIdentityFrom(identity)));
    return form;
  };
  return {
    async tokensFor(identity, resource, requestedClientId, caller) {
      return provider.getTokens(formOf(identity), resource, {
        ...(requestedClientId !== undefined ? { requestedClientId } : {}),
        ...(caller !== undefined ? { caller } : {}),
      });
    },
    cachedTokensFor(identity, resource) {
      if (identity.type === null) return undefined;
      return provider.peekTokens(formOf(identity), resource);
    },
    async nodeToken(resource, identity, vet, caller) {
      return provider.getNodeToken(resource, identity, {
        ...(vet ? { vet } : {}),
        ...(caller !== undefined ? { caller } : {}),
      });
    },
    forgetNodeTokens() {
      provider.invalidateNodeTokens();
    },
    statusForError: tokenErrorHttpStatus,
    isIdentityNotFound: tokenErrorIsIdentityNotFound,
    messageForError: tokenErrorPublicMessage,
    retryAfterSeconds: tokenErrorRetryAfterSeconds,
  };
}
