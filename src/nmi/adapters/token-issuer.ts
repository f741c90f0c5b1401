// Connects the handlers' TokenIssuer port to the token provider (cache, IMDS, service principals).

import type { AzureIdentity } from '../../crds/types.js';
import type { IssuedToken } from '../core/imds-body.js';
import type { TokenIssuer } from '../ports.js';
import { identityCacheKey, tokenErrorHttpStatus, type TokenProvider, type TokenRequestIdentity } from '../tokens/index.js';

export function tokenIssuerFrom(provider: TokenProvider): TokenIssuer {
  return {
    async tokensFor(identity, resource, requestedClientId) {
      const tokens = await provider.getTokens(toTokenIdentity(identity), resource, {
        ...(requestedClientId !== undefined ? { requestedClientId } : {}),
      });
      return tokens.map(toIssued);
    },
    async nodeToken(resource, clientId) {
      return toIssued(await provider.getNodeToken(resource, clientId));
    },
    statusForError: tokenErrorHttpStatus,
  };
}

export function toTokenIdentity(identity: AzureIdentity): TokenRequestIdentity {
  if (identity.type === null) throw new Error(`identity ${identity.namespace}/${identity.name} has an invalid type`);
  return {
    cacheKey: identityCacheKey(identity),
    type: identity.type,
    clientID: identity.clientID,
    ...(identity.resourceID !== '' ? { resourceID: identity.resourceID } : {}),
    ...(identity.tenantID !== '' ? { tenantID: identity.tenantID } : {}),
    ...(identity.auxiliaryTenantIDs.length > 0 ? { auxiliaryTenantIDs: identity.auxiliaryTenantIDs } : {}),
    ...(identity.adEndpoint !== '' ? { adEndpoint: identity.adEndpoint } : {}),
    ...(identity.clientPassword !== null ? { clientPassword: identity.clientPassword } : {}),
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
