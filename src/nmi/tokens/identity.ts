// From the normalised AzureIdentity (src/crds) to what the token sources need, with its cache key.
import type { AzureIdentity } from '../../crds/types.js';
import { identityCacheKey, TokenError, type TokenRequestIdentity } from './types.js';

/** Throws an `invalid` TokenError for an identity whose spec.type is not 0, 1 or 2 (NMI answers 503, as the original). */
export function tokenRequestIdentityFrom(identity: AzureIdentity): TokenRequestIdentity {
  if (identity.type === null) {
    throw new TokenError(
      'invalid',
      `azure identity ${identity.namespace}/${identity.name} has unsupported type ${identity.invalidType || '(empty)'}`,
    );
  }
  return {
    cacheKey: identityCacheKey(identity),
    namespace: identity.namespace,
    type: identity.type,
    clientID: identity.clientID,
    ...(identity.resourceID ? { resourceID: identity.resourceID } : {}),
    ...(identity.tenantID ? { tenantID: identity.tenantID } : {}),
    ...(identity.auxiliaryTenantIDs.length > 0 ? { auxiliaryTenantIDs: identity.auxiliaryTenantIDs } : {}),
    ...(identity.adEndpoint ? { adEndpoint: identity.adEndpoint } : {}),
    ...(identity.clientPassword ? { clientPassword: identity.clientPassword } : {}),
  };
}
