import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Clock } from '../../common/clock.js';
import type { EmulatorOperation, FaultBook } from './faults.js';
import { isRecord, parseJson, readBody, sendEmpty, sendJson } from './http.js';
import { identityKey, type ArmErrorInfo } from './identity-patch.js';
import type { FederatedCredential, UserAssignedIdentity, World } from './world.js';

/** At most this many federated identity credentials under one user-assigned identity (Entra docs). */
export const MAX_FEDERATED_CREDENTIALS_PER_IDENTITY = 20;
/** The name rule of the MSI resource provider (and arm-msi's client-side check). */
export const FEDERATED_CREDENTIAL_NAME = /^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$/;
const MAX_PROPERTY_LENGTH = 600;
/** api-versions of Microsoft.ManagedIdentity that have the federatedIdentityCredentials type (federation.md §2.1). */
export const FEDERATED_CREDENTIAL_API_VERSIONS = [
  '2022-01-31-preview',
  '2023-01-31',
  '2023-07-31-preview',
  '2024-11-30',
  '2025-01-31-preview',
  '2025-05-31-preview',
] as const;

export interface FicContext {
  readonly world: World;
  readonly faults: FaultBook;
  readonly log: Logger;
  readonly baseUrl: () => string;
  readonly clock: Clock;
}

export interface FicRoute {
  readonly operation: EmulatorOperation;
  readonly target: string;
  readonly dialect: 'arm';
  readonly ownsLatency?: boolean;
  readonly handle: () => Promise<void> | void;
}

export interface FederatedCredentialsApi {
  route(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    method: string,
    rg: string,
    identityName: string,
    ficName: string | undefined,
  ): FicRoute | { readonly notAllowed: EmulatorOperation };
}

/**
 * ARM `Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials`: PUT (201 new / 200 updated),
 * GET, list (`$top`, `$skiptoken`, `nextLink`), DELETE (200 / 204). Writes under one identity are serialised by
 * Azure: a second write while one is in flight (its latency is `setLatency('fic_put'|'fic_delete', ms)`) gets 409.
 */
export function federatedCredentialRoutes(ctx: FicContext): FederatedCredentialsApi {
  const writing = new Set<string>(); // identityKey of identities with a FIC write in flight
  const world = ctx.world;

  const parent = (res: ServerResponse, rg: string, name: string): UserAssignedIdentity | undefined => {
    if (!world.resourceGroup(rg)) {
      ficError(res, { status: 404, code: 'ResourceGroupNotFound', message: `Resource group '${rg}' could not be found.` });
      return undefined;
    }
    const identity = world.getUserAssignedIdentity(world.identityId(rg, name));
    if (!identity) ficError(res, { status: 404, code: 'ParentResourceNotFound', message: "The parent user-assigned identity doesn't exist." });
    return identity;
  };

  /** Holds the identity's write slot for the operation's latency; false (and 409 sent) when another write holds it. */
  const serialised = async (res: ServerResponse, identity: UserAssignedIdentity, op: 'fic_put' | 'fic_delete', write: () => void): Promise<void> => {
    const key = identityKey(identity.id);
    if (writing.has(key)) return ficError(res, concurrentWrites(identity));
    writing.add(key);
    try {
      const latency = ctx.faults.latency(op);
      if (latency > 0) await sleep(latency);
      write();
    } finally {
      writing.delete(key);
    }
  };

  const get = (res: ServerResponse, rg: string, name: string, ficName: string): void => {
    const identity = parent(res, rg, name);
    if (!identity) return;
    const fic = world.federatedCredential(identity.id, ficName);
    if (!fic) return ficError(res, ficNotFound(rg, name, ficName));
    sendJson(res, 200, world.federatedCredentialView(identity, fic));
  };

  const list = (res: ServerResponse, url: URL, rg: string, name: string): void => {
    const identity = parent(res, rg, name);
    if (!identity) return;
    const topRaw = url.searchParams.get('$top');
    const top = topRaw === null ? undefined : Number(topRaw);
    if (top !== undefined && (!Number.isInteger(top) || top < 1)) {
      return ficError(res, { status: 400, code: 'BadRequest', message: `The value '${topRaw}' of query parameter '$top' is not valid. It must be an integer of at least 1.` });
    }
    const skip = Number(url.searchParams.get('$skiptoken') ?? '0');
    const all = world.federatedCredentials(identity.id);
    const start = Number.isInteger(skip) && skip > 0 ? skip : 0;
    const end = top === undefined ? all.length : Math.min(all.length, start + top);
    const page = all.slice(start, end).map((f) => world.federatedCredentialView(identity, f));
    let nextLink: string | undefined;
    if (end < all.length) {
      const next = new URL(`${ctx.baseUrl()}${url.pathname}`);
      next.searchParams.set('api-version', url.searchParams.get('api-version') ?? '');
      if (top !== undefined) next.searchParams.set('$top', String(top));
      next.searchParams.set('$skiptoken', String(end));
      nextLink = next.toString();
    }
    sendJson(res, 200, { value: page, ...(nextLink ? { nextLink } : {}) });
  };

  const put = async (req: IncomingMessage, res: ServerResponse, rg: string, name: string, ficName: string): Promise<void> => {
    const parsed = parseJson(await readBody(req));
    const identity = parent(res, rg, name);
    if (!identity) return;
    if (!FEDERATED_CREDENTIAL_NAME.test(ficName)) {
      return ficError(res, { status: 400, code: 'BadRequest', message: `Federated Identity Credential name '${ficName}' is invalid.` });
    }
    if (!parsed.ok || !isRecord(parsed.value)) {
      return ficError(res, {
        status: 400,
        code: 'InvalidRequestContent',
        message: `The request content was invalid and could not be deserialized: '${parsed.ok ? 'not an object' : parsed.error}'.`,
      });
    }
    const props = parsed.value.properties;
    const checked = checkProperties(props);
    if ('error' in checked) return ficError(res, checked.error);
    const { issuer, subject, audiences } = checked;
    await serialised(res, identity, 'fic_put', () => {
      const others = world.federatedCredentials(identity.id).filter((f) => f.name.toLowerCase() !== ficName.toLowerCase());
      const existing = world.federatedCredential(identity.id, ficName);
      if (!existing && others.length >= MAX_FEDERATED_CREDENTIALS_PER_IDENTITY) return ficError(res, limitReached(identity));
      if (others.some((f) => f.issuer === issuer && f.subject === subject)) {
        return ficError(res, { status: 400, code: 'BadRequest', message: 'Issuer and subject combination already exists for this Managed Identity.' });
      }
      const unchanged =
        existing !== undefined && existing.issuer === issuer && existing.subject === subject && sameList(existing.audiences, audiences);
      const fic: FederatedCredential = { name: ficName, issuer, subject, audiences, changedAt: unchanged ? existing.changedAt : ctx.clock.now() };
      const created = world.putFederatedCredential(identity.id, fic);
      ctx.log.debug({ identity: identity.name, fic: ficName, created }, 'federated identity credential written');
      sendJson(res, created ? 201 : 200, world.federatedCredentialView(identity, world.federatedCredential(identity.id, ficName) ?? fic));
    });
  };

  const remove = async (res: ServerResponse, rg: string, name: string, ficName: string): Promise<void> => {
    const identity = parent(res, rg, name);
    if (!identity) return;
    await serialised(res, identity, 'fic_delete', () => {
      const deleted = world.deleteFederatedCredential(identity.id, ficName);
      ctx.log.debug({ identity: identity.name, fic: ficName, deleted }, 'federated identity credential delete');
      sendEmpty(res, deleted ? 200 : 204);
    });
  };

  const routeKnown = (
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    method: string,
    rg: string,
    identityName: string,
    ficName: string | undefined,
    target: string,
  ): FicRoute | { readonly notAllowed: EmulatorOperation } => {
    if (ficName === undefined) {
      if (method !== 'GET') return { notAllowed: 'fic_list' };
      return { operation: 'fic_list', target, dialect: 'arm', handle: () => list(res, url, rg, identityName) };
    }
    if (method === 'GET') return { operation: 'fic_get', target, dialect: 'arm', handle: () => get(res, rg, identityName, ficName) };
    if (method === 'PUT') {
      return { operation: 'fic_put', target, dialect: 'arm', ownsLatency: true, handle: () => put(req, res, rg, identityName, ficName) };
    }
    if (method === 'DELETE') {
      return { operation: 'fic_delete', target, dialect: 'arm', ownsLatency: true, handle: () => remove(res, rg, identityName, ficName) };
    }
    return { notAllowed: 'fic_get' };
  };

  return {
    route(req, res, url, method, rg, identityName, ficName) {
      const target = `${identityName}/${ficName ?? ''}`;
      const route = routeKnown(req, res, url, method, rg, identityName, ficName, target);
      if ('notAllowed' in route) return route;
      const apiVersion = url.searchParams.get('api-version');
      if (apiVersion === null || (FEDERATED_CREDENTIAL_API_VERSIONS as readonly string[]).includes(apiVersion)) return route;
      // ARM resolves the type's registration for that api-version: versions before 2022-01-31-preview lack it.
      return { ...route, ownsLatency: false, handle: () => ficError(res, noRegisteredProvider(apiVersion, world.defaultLocation)) };
    },
  };
}

type Checked = { readonly issuer: string; readonly subject: string; readonly audiences: readonly string[] } | { readonly error: ArmErrorInfo };

function checkProperties(props: unknown): Checked {
  const bad = (message: string): Checked => ({ error: { status: 400, code: 'BadRequest', message } });
  if (!isRecord(props)) return bad('Federated Identity Credential from HTTP body has empty properties');
  const { issuer, subject, audiences } = props;
  if (typeof issuer !== 'string' || issuer === '' || typeof subject !== 'string' || subject === '' || audiences === undefined || audiences === null) {
    return bad('Federated Identity Credential from HTTP body has empty properties');
  }
  if (!Array.isArray(audiences) || audiences.length !== 1 || typeof audiences[0] !== 'string' || audiences[0] === '') {
    return bad('Federated identity credentials must have exactly one audience.');
  }
  const audience = audiences[0] as string;
  for (const [field, value] of [['issuer', issuer], ['subject', subject], ['audiences', audience]] as const) {
    if (value.length > MAX_PROPERTY_LENGTH) return bad(`Federated Identity Credential property '${field}' exceeds the maximum length of ${MAX_PROPERTY_LENGTH} characters.`);
  }
  let url: URL | undefined;
  try {
    url = new URL(issuer);
  } catch {
    url = undefined;
  }
  if (!url || url.protocol !== 'https:') return bad(`Federated Identity Credential issuer '${issuer}' is not a valid https URL.`);
  return { issuer, subject, audiences: [audience] };
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function concurrentWrites(identity: UserAssignedIdentity): ArmErrorInfo {
  return {
    status: 409,
    code: 'ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity',
    message:
      `Too many Federated Identity Credentials are written concurrently for the managed identity '${identity.id.toLowerCase()}'. ` +
      'Concurrent Federated Identity Credentials writes under the same managed identity are not supported.',
  };
}

function limitReached(identity: UserAssignedIdentity): ArmErrorInfo {
  // Azure's wording for the 21st credential is not published; this text is ours (README).
  return {
    status: 400,
    code: 'BadRequest',
    message:
      `The managed identity '${identity.id.toLowerCase()}' already has the maximum of ${MAX_FEDERATED_CREDENTIALS_PER_IDENTITY} ` +
      'federated identity credentials. Delete one before adding another.',
  };
}

function noRegisteredProvider(apiVersion: string, location: string): ArmErrorInfo {
  return {
    status: 400,
    code: 'NoRegisteredProviderFound',
    message:
      `No registered resource provider found for location '${location}' and API version '${apiVersion}' for type ` +
      `'userAssignedIdentities/federatedIdentityCredentials'. The supported api-versions are '${FEDERATED_CREDENTIAL_API_VERSIONS.join(', ')}'. ` +
      `The supported locations are '${location}'.`,
  };
}

function ficNotFound(rg: string, identity: string, fic: string): ArmErrorInfo {
  return {
    status: 404,
    code: 'ResourceNotFound',
    message: `The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/${identity}/federatedIdentityCredentials/${fic}' under resource group '${rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`,
  };
}

function ficError(res: ServerResponse, e: ArmErrorInfo): void {
  sendJson(res, e.status, { error: { code: e.code, message: e.message } });
}
