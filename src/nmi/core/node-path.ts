// The node path (an excepted pod, or MIC) may reach the node's own identities only: never one that an AzureIdentity in
// the cluster declares, since every identity MIC attaches to the VM/VMSS is visible to the node's IMDS (issue 10 §4).

import type { AzureIdentity } from '../../crds/types.js';
import { IDENTITY_NOT_FOUND } from './imds-body.js';
import type { TokenRequest } from './token-request.js';

/** The identities AzureIdentities declare, keyed by lower-cased client ID / normalised resource ID, to `namespace/name`. */
export interface DeclaredIdentities {
  readonly clientIds: ReadonlyMap<string, string>;
  readonly resourceIds: ReadonlyMap<string, string>;
}

/**
 * A node-path request or token that must not be served: `status` and `body` go to the pod, `reason` only to the log
 * and the audit. The pod gets what IMDS answers for an identity the VM does not have (400 "Identity not found"), so it
 * cannot tell an identity another namespace declares from one that exists nowhere; for a request with no id, what
 * IMDS answers when the VM has no identity it could pick — the same 400.
 */
export interface NodeRefusal {
  readonly status: 400;
  readonly body: typeof IDENTITY_NOT_FOUND;
  readonly reason: string;
}

/** What an admin does instead, for the log line. */
export const NODE_PATH_REMEDY =
  'an identity declared by an AzureIdentity is served only through an AzureIdentityBinding: bind it to the pod (label aadpodidbinding) instead of an AzurePodIdentityException';

export function declaredIdentitiesOf(identities: Iterable<AzureIdentity>): DeclaredIdentities {
  const clientIds = new Map<string, string>();
  const resourceIds = new Map<string, string>();
  for (const identity of identities) {
    const owner = `${identity.namespace}/${identity.name}`;
    if (identity.clientID.trim() !== '') setFirst(clientIds, clientIdKey(identity.clientID), owner);
    if (identity.resourceID.trim() !== '') setFirst(resourceIds, resourceIdKey(identity.resourceID), owner);
  }
  return { clientIds, resourceIds };
}

/** Before asking IMDS: refuses a client_id / msi_res_id / mi_res_id that names a declared identity. */
export function nodeRequestRefusal(
  request: Pick<TokenRequest, 'clientId' | 'resourceId'>,
  declared: DeclaredIdentities,
): NodeRefusal | undefined {
  if (request.clientId !== undefined) {
    const owner = declared.clientIds.get(clientIdKey(request.clientId));
    if (owner !== undefined) return refusal(`client_id names the identity of AzureIdentity ${owner}`);
  }
  if (request.resourceId !== undefined) {
    const owner = declared.resourceIds.get(resourceIdKey(request.resourceId));
    if (owner !== undefined) return refusal(`msi_res_id/mi_res_id names the identity of AzureIdentity ${owner}`);
  }
  return undefined;
}

/** Which identity a token is for, as far as it says: IMDS's `client_id` or the JWT's, and the JWT's `xms_mirid`. */
export interface TokenIdentity {
  readonly clientId?: string;
  readonly resourceId?: string;
}

/**
 * After IMDS answered: refuses a token for a declared identity (a request without an id gets the VM's only
 * user-assigned identity; a resource ID may be spelled in a form the check above does not know; an AzureIdentity may
 * declare only a resource ID). A token that names no identity is refused whenever anything is declared: it might be
 * any of them.
 */
export function nodeTokenRefusal(token: TokenIdentity, declared: DeclaredIdentities): NodeRefusal | undefined {
  const clientId = token.clientId?.trim() ?? '';
  const resourceId = token.resourceId?.trim() ?? '';
  if (clientId === '' && resourceId === '') {
    if (declared.clientIds.size === 0 && declared.resourceIds.size === 0) return undefined;
    return refusal('IMDS returned a token that names no identity (no client_id, appid, azp or xms_mirid)');
  }
  const owner =
    (clientId === '' ? undefined : declared.clientIds.get(clientIdKey(clientId))) ??
    (resourceId === '' ? undefined : declared.resourceIds.get(resourceIdKey(resourceId)));
  if (owner !== undefined) return refusal(`IMDS returned the identity of AzureIdentity ${owner}`);
  return undefined;
}

/** GUIDs compare case-insensitively; braces are a spelling some parsers accept. */
export function clientIdKey(clientId: string): string {
  return clientId.trim().toLowerCase().replace(/^\{(.*)\}$/, '$1');
}

/** ARM IDs compare case-insensitively; repeated and trailing slashes do not make another identity. */
export function resourceIdKey(resourceId: string): string {
  return resourceId.trim().toLowerCase().replace(/\/{2,}/g, '/').replace(/\/+$/, '');
}

function refusal(reason: string): NodeRefusal {
  return { status: 400, body: IDENTITY_NOT_FOUND, reason };
}

function setFirst(map: Map<string, string>, key: string, owner: string): void {
  const existing = map.get(key);
  // The smallest namespace/name, so the log names the same owner whatever the informer's order.
  if (existing === undefined || owner < existing) map.set(key, owner);
}
