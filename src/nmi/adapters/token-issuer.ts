// Connects the handlers' TokenIssuer port to the token provider (cache, IMDS, service principals).

import type { IssuedToken } from '../core/imds-body.js';
import type { TokenIssuer } from '../ports.js';
import { tokenErrorHttpStatus, tokenErrorIsIdentityNotFound, tokenErrorPublicMessage, tokenErrorRetryAfterSeconds, tokenRequestIdentityFrom, type TokenProvider } from '../tokens/index.js';

export function tokenIssuerFrom(provider: TokenProvider): TokenIssuer {
  return {
    async tokensFor(identity, resource, requestedClientId, caller) {
      const tokens = await provider.getTokens(tokenRequestIdentityFrom(identity), resource, {
        ...(requestedClientId !== undefined ? { requestedClientId } : {}),
        ...(caller !== undefined ? { caller } : {}),
      });
      return tokens.map(toIssued);
    },
    cachedTokensFor(identity, resource) {
      if (identity.type === null) return undefined;
      return provider.peekTokens(tokenRequestIdentityFrom(identity), resource)?.map(toIssued);
    },
    async nodeToken(resource, identity, vet, caller) {
      return toIssued(
        await provider.getNodeToken(resource, identity, {
          ...(vet ? { vet: (token) => vet(toIssued(token)) } : {}),
          ...(caller !== undefined ? { caller } : {}),
        }),
      );
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

function toIssued(token: { accessToken: string; expiresOn: number; notBefore?: number; tokenType: string; clientId?: string }): IssuedToken {
  return {
    accessToken: token.accessToken,
    expiresOn: token.expiresOn,
    ...(token.notBefore !== undefined ? { notBefore: token.notBefore } : {}),
    tokenType: token.tokenType,
    ...(token.clientId !== undefined ? { clientId: token.clientId } : {}),
  };
}
