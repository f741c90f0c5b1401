// Connects the handlers' TokenIssuer port to the token provider (cache, IMDS, service principals).

import type { AzureIdentity, PodView } from '../../crds/types.js';
import type { FederatedPod } from '../tokens/federated.js';
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
    async tokensFor(identity, resource, requestedClientId, caller, federatedFor) {
      return provider.getTokens(formOf(identity), resource, {
        ...(requestedClientId !== undefined ? { requestedClientId } : {}),
        ...(caller !== undefined ? { caller } : {}),
        ...(federatedFor !== undefined ? { federatedPod: federatedPodOf(federatedFor) } : {}),
      });
    },
    cachedTokensFor(identity, resource, federatedFor) {
      if (identity.type === null) return undefined;
      return provider.peekTokens(formOf(identity), resource, federatedFor === undefined ? undefined : federatedPodOf(federatedFor));
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

/** The pod as the federated token source needs it: the pod NMI's index placed at the caller's IP, on this node. */
function federatedPodOf(pod: PodView): FederatedPod {
  return { namespace: pod.namespace, name: pod.name, uid: pod.uid, serviceAccountName: pod.serviceAccountName ?? '' };
}
