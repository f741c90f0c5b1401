import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { EmulatorOperation, FaultBook, FaultSpec } from './faults.js';
import { isRecord, parseJson, readBody, sendEmpty, sendJson, type RoutedRequest } from './http.js';
import { AuthorizationApi, authorizationFailed, linkedAuthorizationFailed } from './authorization.js';
import {
  failedIdentityOperation,
  identityKey,
  planIdentityPatch,
  type ArmErrorInfo,
  type IdentityPatchPlan,
} from './identity-patch.js';
import { normalizeScope } from './rbac.js';
import type { AccessTokenClaims, TokenSigner } from './signer.js';
import type { Clock } from '../../common/clock.js';
import { federatedCredentialRoutes, type FederatedCredentialsApi } from './fic.js';
import type { ComputeKind, ComputeResource, World } from './world.js';
import { realClock } from '../../common/clock.js';

export type LroMode = 'sync' | 'async';

export interface ArmContext {
  readonly world: World;
  readonly faults: FaultBook;
  readonly signer: TokenSigner;
  readonly log: Logger;
  readonly baseUrl: () => string;
  readonly lroMode: () => LroMode;
  readonly clock: Clock;
}

/** Audiences ARM accepts, as its InvalidAuthenticationTokenAudience message lists them. */
export const ARM_AUDIENCES = [
  'https://management.core.windows.net/',
  'https://management.core.windows.net',
  'https://management.azure.com/',
  'https://management.azure.com',
] as const;

interface Caller {
  readonly appId: string;
  readonly objectId: string;
}

interface LongRunningOperation {
  readonly id: string;
  readonly location: string;
  readonly startTime: string;
  endTime?: string;
  status: 'InProgress' | 'Succeeded' | 'Failed';
  error?: { code: string; message: string };
  readonly resource: ComputeResource;
}

const SUB = '/subscriptions/([^/]+)';
const RG = `${SUB}/resourcegroups/([^/]+)`;
const AUTHZ = /^(.*?)\/providers\/microsoft\.authorization\/(roleassignments|roledefinitions|permissions)(?:\/([^/]+))?$/i;
const ROUTES: readonly { re: RegExp; kind: string }[] = [
  { re: new RegExp(`^${RG}/providers/microsoft\\.compute/virtualmachines/([^/]+)$`, 'i'), kind: 'vm' },
  { re: new RegExp(`^${RG}/providers/microsoft\\.compute/virtualmachinescalesets/([^/]+)$`, 'i'), kind: 'vmss' },
  {
    re: new RegExp(`^${RG}/providers/microsoft\\.compute/virtualmachinescalesets/([^/]+)/virtualmachines/([^/]+)$`, 'i'),
    kind: 'vmss_vm',
  },
  { re: new RegExp(`^${SUB}/providers/microsoft\\.compute/locations/([^/]+)/operations/([^/]+)$`, 'i'), kind: 'operation' },
  {
    re: new RegExp(`^${RG}/providers/microsoft\\.managedidentity/userassignedidentities/([^/]+)$`, 'i'),
    kind: 'msi',
  },
  {
    re: new RegExp(`^${RG}/providers/microsoft\\.managedidentity/userassignedidentities/([^/]+)/federatedidentitycredentials(?:/([^/]+))?$`, 'i'),
    kind: 'fic',
  },
  { re: new RegExp(`^${RG}/providers/microsoft\\.managedidentity/userassignedidentities$`, 'i'), kind: 'msi_list_rg' },
  { re: new RegExp(`^${SUB}/providers/microsoft\\.managedidentity/userassignedidentities$`, 'i'), kind: 'msi_list_sub' },
  { re: new RegExp(`^${RG}$`, 'i'), kind: 'rg' },
];

/** The action ARM's authorization checks for each operation, or undefined when it checks none. */
const ACTIONS: Partial<Record<string, string>> = {
  rg_get: 'Microsoft.Resources/subscriptions/resourceGroups/read',
  vm_get: 'Microsoft.Compute/virtualMachines/read',
  vm_patch: 'Microsoft.Compute/virtualMachines/write',
  vmss_get: 'Microsoft.Compute/virtualMachineScaleSets/read',
  vmss_patch: 'Microsoft.Compute/virtualMachineScaleSets/write',
  vmss_vm_get: 'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read',
  msi_get: 'Microsoft.ManagedIdentity/userAssignedIdentities/read',
  msi_list: 'Microsoft.ManagedIdentity/userAssignedIdentities/read',
  msi_put: 'Microsoft.ManagedIdentity/userAssignedIdentities/write',
  msi_delete: 'Microsoft.ManagedIdentity/userAssignedIdentities/delete',
  fic_get: 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read',
  fic_list: 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read',
  fic_put: 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write',
  fic_delete: 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete',
  role_assignment_get: 'Microsoft.Authorization/roleAssignments/read',
  role_assignment_list: 'Microsoft.Authorization/roleAssignments/read',
  role_assignment_put: 'Microsoft.Authorization/roleAssignments/write',
  role_assignment_delete: 'Microsoft.Authorization/roleAssignments/delete',
};

/** ARM: compute (VM, VMSS, VMSS instances, async operations), MSI and Microsoft.Authorization, behind bearer authentication. */
export class ArmApi {
  readonly #ctx: ArmContext;
  readonly #authz: AuthorizationApi;
  readonly #operations = new Map<string, LongRunningOperation>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #fic: FederatedCredentialsApi;

  constructor(ctx: ArmContext) {
    this.#ctx = ctx;
    this.#authz = new AuthorizationApi(ctx.world);
    this.#fic = federatedCredentialRoutes(ctx);
  }

  /** Matches an ARM request; undefined when the path is not an ARM path. */
  route(req: IncomingMessage, res: ServerResponse, url: URL): RoutedRequest | undefined {
    // SDKs build `//subscriptions/...` from scopes with a leading slash, and `...//type/...` from empty parent paths.
    const path = normalizeScope(url.pathname);
    if (!/^\/(subscriptions\/|providers\/microsoft\.authorization\/)/i.test(path)) return undefined;
    const method = (req.method ?? 'GET').toUpperCase();
    const authz = AUTHZ.exec(path);
    if (authz) return this.#routeAuthorization(req, res, url, method, authz);
    for (const { re, kind } of ROUTES) {
      const m = re.exec(path);
      if (!m) continue;
      const g = m.slice(1).map((s) => (s === undefined ? s : decodeURIComponent(s))); // unmatched optional groups stay undefined
      // ARM authorises the action at the request's scope before the resource provider sees it (so 403 before 404).
      const run = (fn: (caller: Caller) => Promise<void> | void, operation?: string) => () =>
        this.#guard(req, res, url, g[0] ?? '', (caller) => {
          const action = operation === undefined ? undefined : ACTIONS[operation];
          if (action !== undefined && !this.#ctx.world.allows(caller.objectId, action, path)) {
            return armError(res, authorizationFailed(caller, action, path));
          }
          return fn(caller);
        });
      switch (kind) {
        case 'vm':
        case 'vmss': {
          const k = kind as ComputeKind;
          const [, rg = '', name = ''] = g;
          if (method === 'GET') {
            return { operation: `${k}_get`, target: name, dialect: 'arm', handle: run(() => this.#getCompute(res, k, rg, name), `${k}_get`) };
          }
          if (method === 'PATCH') {
            return {
              operation: `${k}_patch`,
              target: name,
              dialect: 'arm',
              ownsLatency: true,
              handle: run((caller) => this.#patchCompute(req, res, url, path, k, rg, name, caller), `${k}_patch`),
            };
          }
          return this.#methodNotAllowed(res, method, `${k}_get`, name);
        }
        case 'vmss_vm': {
          const [, rg = '', name = '', instanceId = ''] = g;
          if (method !== 'GET') return this.#methodNotAllowed(res, method, 'vmss_vm_get', name);
          return {
            operation: 'vmss_vm_get',
            target: `${name}/${instanceId}`,
            dialect: 'arm',
            handle: run(() => this.#getVmssInstance(res, rg, name, instanceId), 'vmss_vm_get'),
          };
        }
        case 'operation': {
          const [, , opId = ''] = g;
          return { operation: 'operation_get', target: opId, dialect: 'arm', handle: run(() => this.#getOperation(res, url, opId)) };
        }
        case 'msi': {
          const [, rg = '', name = ''] = g;
          if (method === 'GET') return { operation: 'msi_get', target: name, dialect: 'arm', handle: run(() => this.#getIdentity(res, rg, name), 'msi_get') };
          if (method === 'PUT') {
            return { operation: 'msi_put', target: name, dialect: 'arm', handle: run(() => this.#putIdentity(req, res, rg, name), 'msi_put') };
          }
          if (method === 'DELETE') {
            return { operation: 'msi_delete', target: name, dialect: 'arm', handle: run(() => this.#deleteIdentity(res, rg, name), 'msi_delete') };
          }
          return this.#methodNotAllowed(res, method, 'msi_get', name);
        }
        case 'fic': {
          const [, rg = '', identity = '', fic] = g;
          const r = this.#fic.route(req, res, url, method, rg, identity, fic);
          if ('notAllowed' in r) return this.#methodNotAllowed(res, method, r.notAllowed, fic ?? identity);
          return { ...r, handle: run(r.handle, r.operation) };
        }
        case 'msi_list_rg':
        case 'msi_list_sub': {
          const rg = kind === 'msi_list_rg' ? g[1] : undefined;
          return { operation: 'msi_list', target: rg ?? '', dialect: 'arm', handle: run(() => this.#listIdentities(res, rg), 'msi_list') };
        }
        case 'rg': {
          const [, rg = ''] = g;
          return { operation: 'rg_get', target: rg, dialect: 'arm', handle: run(() => this.#getResourceGroup(res, rg), 'rg_get') };
        }
      }
    }
    return {
      operation: 'unknown',
      target: path,
      dialect: 'arm',
      handle: async () => armError(res, { status: 404, code: 'NotFound', message: `No route matches '${path}'.` }),
    };
  }

  #routeAuthorization(req: IncomingMessage, res: ServerResponse, url: URL, method: string, m: RegExpExecArray): RoutedRequest {
    const scope = normalizeScope(m[1] ?? '');
    const collection = (m[2] ?? '').toLowerCase();
    const name = m[3] === undefined ? undefined : decodeURIComponent(m[3]);
    const sub = /^\/subscriptions\/([^/]+)/i.exec(scope)?.[1];
    const filter = url.searchParams.get('$filter');
    const a = this.#authz;
    const make = (operation: EmulatorOperation, fn: (caller: Caller) => Promise<void> | void): RoutedRequest => ({
      operation,
      target: name ?? scope,
      dialect: 'arm',
      handle: () =>
        this.#guard(req, res, url, sub, (caller) => {
          const action = ACTIONS[operation];
          if (action !== undefined && !this.#ctx.world.allows(caller.objectId, action, scope)) {
            return armError(res, authorizationFailed(caller, action, scope));
          }
          return fn(caller);
        }),
    });
    if (sub === undefined && !(collection === 'roledefinitions' && method === 'GET')) {
      // Only built-in role definitions live at the root in this emulator.
      return this.#methodNotAllowed(res, method, 'role_assignment_get', scope);
    }
    if (collection === 'permissions') {
      if (name !== undefined || method !== 'GET') return this.#methodNotAllowed(res, method, 'permissions_list', scope);
      return make('permissions_list', (caller) => a.listPermissions(res, scope, caller));
    }
    if (collection === 'roledefinitions') {
      if (method !== 'GET') return this.#methodNotAllowed(res, method, 'role_definition_get', scope);
      if (name === undefined) return make('role_definition_list', () => a.listDefinitions(res, scope, filter));
      return make('role_definition_get', () => a.getDefinition(res, scope, name));
    }
    if (name === undefined) {
      if (method !== 'GET') return this.#methodNotAllowed(res, method, 'role_assignment_list', scope);
      return make('role_assignment_list', () => a.listAssignments(res, scope, filter));
    }
    if (method === 'GET') return make('role_assignment_get', () => a.getAssignment(res, scope, name));
    if (method === 'PUT') return make('role_assignment_put', (caller) => a.putAssignment(req, res, scope, name, caller));
    if (method === 'DELETE') return make('role_assignment_delete', () => a.deleteAssignment(res, scope, name));
    return this.#methodNotAllowed(res, method, 'role_assignment_get', name);
  }

  /** Cancels pending completions (emulator shutdown). */
  stop(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  // ---- common checks -----------------------------------------------------------------------------------------------
  async #guard(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    subscriptionId: string | undefined,
    fn: (caller: Caller) => Promise<void> | void,
  ): Promise<void> {
    const auth = await this.#authenticate(req);
    if ('error' in auth) {
      const { error } = auth;
      armError(res, error, {
        'www-authenticate': `Bearer authorization_uri="https://login.windows.net/", error="invalid_token", error_description="${error.message.replaceAll('"', "'")}"`,
      });
      return;
    }
    if (!url.searchParams.get('api-version')) {
      armError(res, {
        status: 400,
        code: 'MissingApiVersionParameter',
        message: 'The api-version query parameter (?api-version=) is required for all requests.',
      });
      return;
    }
    if (subscriptionId !== undefined && subscriptionId.toLowerCase() !== this.#ctx.world.subscriptionId.toLowerCase()) {
      armError(res, { status: 404, code: 'SubscriptionNotFound', message: `The subscription '${subscriptionId}' could not be found.` });
      return;
    }
    await fn(auth.caller);
  }

  async #authenticate(req: IncomingMessage): Promise<{ caller: Caller } | { error: ArmErrorInfo }> {
    const header = req.headers.authorization;
    if (!header) {
      return { error: { status: 401, code: 'AuthenticationFailed', message: "Authentication failed. The 'Authorization' header is missing." } };
    }
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m?.[1]) {
      return {
        error: {
          status: 401,
          code: 'AuthenticationFailed',
          message: "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        },
      };
    }
    const result = await this.#ctx.signer.verify(m[1]);
    if (!result.ok) {
      if (result.reason === 'expired') {
        const exp = new Date(Number(result.detail) * 1000).toISOString();
        return {
          error: {
            status: 401,
            code: 'ExpiredAuthenticationToken',
            message: `The access token expiry UTC time '${exp}' is earlier than current UTC time '${new Date(realClock.now()).toISOString()}'.`,
          },
        };
      }
      return { error: { status: 401, code: 'InvalidAuthenticationToken', message: 'The access token is invalid.' } };
    }
    return this.#checkClaims(result.claims);
  }

  #checkClaims(claims: AccessTokenClaims): { caller: Caller } | { error: ArmErrorInfo } {
    if (!(ARM_AUDIENCES as readonly string[]).includes(claims.aud)) {
      return {
        error: {
          status: 401,
          code: 'InvalidAuthenticationTokenAudience',
          message:
            `The access token has been obtained for wrong audience or resource '${claims.aud}'. It should exactly match with one of ` +
            `the allowed audiences ${ARM_AUDIENCES.map((a) => `'${a}'`).join(',')}.`,
        },
      };
    }
    const tenant = this.#ctx.world.tenantId;
    if (claims.tid.toLowerCase() !== tenant.toLowerCase()) {
      return {
        error: {
          status: 401,
          code: 'InvalidAuthenticationTokenTenant',
          message:
            `The access token is from the wrong issuer '${claims.iss}'. It must match the tenant 'https://sts.windows.net/${tenant}/' ` +
            `associated with this subscription. Please use the authority (URL) 'https://login.windows.net/${tenant}' to get the token.`,
        },
      };
    }
    return { caller: { appId: claims.appid, objectId: claims.oid } };
  }

  #methodNotAllowed(res: ServerResponse, method: string, operation: RoutedRequest['operation'], target: string): RoutedRequest {
    return {
      operation,
      target,
      dialect: 'arm',
      handle: async () =>
        armError(res, {
          status: 405,
          code: 'MethodNotAllowed',
          message: `The requested method '${method}' is not allowed for this resource.`,
        }),
    };
  }

  // ---- resource groups ---------------------------------------------------------------------------------------------
  #getResourceGroup(res: ServerResponse, rg: string): void {
    const group = this.#ctx.world.resourceGroup(rg);
    if (!group) return armError(res, resourceGroupNotFound(rg));
    sendJson(res, 200, {
      id: `/subscriptions/${this.#ctx.world.subscriptionId}/resourceGroups/${group.name}`,
      name: group.name,
      type: 'Microsoft.Resources/resourceGroups',
      location: group.location,
      properties: { provisioningState: 'Succeeded' },
    });
  }

  // ---- compute -----------------------------------------------------------------------------------------------------
  #findCompute(res: ServerResponse, kind: ComputeKind, rg: string, name: string): ComputeResource | undefined {
    const world = this.#ctx.world;
    if (!world.resourceGroup(rg)) {
      armError(res, resourceGroupNotFound(rg));
      return undefined;
    }
    const c = world.compute(kind, rg, name);
    if (!c) {
      const type = kind === 'vm' ? 'virtualMachines' : 'virtualMachineScaleSets';
      armError(res, {
        status: 404,
        code: 'ResourceNotFound',
        message: `The Resource 'Microsoft.Compute/${type}/${name}' under resource group '${rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`,
      });
    }
    return c;
  }

  #getCompute(res: ServerResponse, kind: ComputeKind, rg: string, name: string): void {
    const c = this.#findCompute(res, kind, rg, name);
    if (c) sendJson(res, 200, this.#ctx.world.computeView(c));
  }

  #getVmssInstance(res: ServerResponse, rg: string, name: string, instanceId: string): void {
    const c = this.#findCompute(res, 'vmss', rg, name);
    if (!c) return;
    if (!c.instances.includes(instanceId)) {
      return armError(res, {
        status: 404,
        code: 'NotFound',
        message: `The entity was not found in this Azure location.`,
      });
    }
    sendJson(res, 200, this.#ctx.world.vmssInstanceView(c, instanceId));
  }

  async #patchCompute(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    scope: string,
    kind: ComputeKind,
    rg: string,
    name: string,
    caller: Caller,
  ): Promise<void> {
    const parsed = parseJson(await readBody(req));
    if (!parsed.ok || (parsed.value !== undefined && !isRecord(parsed.value))) {
      return armError(res, {
        status: 400,
        code: 'InvalidRequestContent',
        message: `The request content was invalid and could not be deserialized: '${parsed.ok ? 'not an object' : parsed.error}'.`,
      });
    }
    const c = this.#findCompute(res, kind, rg, name);
    if (!c) return;
    const world = this.#ctx.world;
    const planned = planIdentityPatch(isRecord(parsed.value) ? parsed.value.identity : undefined);
    if (!planned.ok) return armError(res, planned.error);
    const { plan } = planned;
    const resourceId = world.computeResourceId(c);

    // Linked check: every identity being attached needs assign/action at its own scope (detaching needs none).
    const assign = 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action';
    const denied = plan.add.filter((id) => !world.allows(caller.objectId, assign, id));
    if (denied.length > 0) {
      const write = kind === 'vm' ? 'Microsoft.Compute/virtualMachines/write' : 'Microsoft.Compute/virtualMachineScaleSets/write';
      return armError(res, linkedAuthorizationFailed(caller, write, scope, denied));
    }
    const missing = plan.add.filter((id) => !world.getUserAssignedIdentity(id));
    if (missing.length > 0) return armError(res, failedIdentityOperation(resourceId, missing));

    // Compute serialises writes to one resource: a second PATCH during an update conflicts.
    if (c.pendingOperation !== undefined) {
      return armError(res, {
        status: 409,
        code: 'Conflict',
        message:
          'The request failed due to conflict with a concurrent request. To resolve it, please refer to https://aka.ms/activitylog ' +
          'to get more details on the conflicting requests.',
      });
    }

    const lroFault = this.#ctx.faults.take(kind === 'vm' ? 'vm_lro' : 'vmss_lro', name);
    const latency = this.#ctx.faults.latency(`${kind}_patch`);
    if (this.#ctx.lroMode() === 'sync') {
      if (latency > 0) await realClock.sleep(latency);
      if (lroFault?.status !== undefined) return armError(res, lroFailure(lroFault));
      world.applyIdentityPlan(c, plan);
      c.provisioningState = 'Succeeded';
      this.#ctx.log.debug({ resource: resourceId, add: plan.add.length, remove: plan.remove.length }, 'identity patch applied');
      return sendJson(res, 200, world.computeView(c));
    }
    const op = this.#startOperation(c, plan, latency, lroFault);
    const opUrl = `${this.#ctx.baseUrl()}/subscriptions/${world.subscriptionId}/providers/Microsoft.Compute/locations/${c.location}/operations/${op.id}?p=${randomUUID()}&api-version=${encodeURIComponent(url.searchParams.get('api-version') ?? '')}`;
    sendEmpty(res, 202, { 'azure-asyncoperation': opUrl, location: `${opUrl}&monitor=true` });
  }

  #startOperation(c: ComputeResource, plan: IdentityPatchPlan, latencyMs: number, fault: FaultSpec | undefined): LongRunningOperation {
    const op: LongRunningOperation = {
      id: randomUUID(),
      location: c.location,
      startTime: new Date(realClock.now()).toISOString(),
      status: 'InProgress',
      resource: c,
    };
    this.#operations.set(op.id, op);
    c.pendingOperation = op.id;
    c.provisioningState = 'Updating';
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      op.endTime = new Date(realClock.now()).toISOString();
      c.pendingOperation = undefined;
      if (fault?.status !== undefined) {
        op.status = 'Failed';
        op.error = lroFailure(fault);
        c.provisioningState = 'Failed';
        return;
      }
      // The identity change becomes visible only now, as with a real update.
      this.#ctx.world.applyIdentityPlan(c, plan);
      c.provisioningState = 'Succeeded';
      op.status = 'Succeeded';
      this.#ctx.log.debug({ operation: op.id, resource: c.name }, 'long-running identity update completed');
    }, latencyMs);
    timer.unref();
    this.#timers.add(timer);
    return op;
  }

  #getOperation(res: ServerResponse, url: URL, opId: string): void {
    const op = this.#operations.get(opId);
    if (!op) {
      return armError(res, { status: 404, code: 'NotFound', message: `The operation '${opId}' was not found.` });
    }
    if (url.searchParams.get('monitor') === 'true') {
      // Location polling: 202 while running, then the resource itself (what the SDK takes as the final result).
      if (op.status === 'InProgress') return sendEmpty(res, 202, { location: url.toString() });
      if (op.status === 'Failed') return armError(res, { status: 400, code: op.error?.code ?? 'Failed', message: op.error?.message ?? '' });
      return sendJson(res, 200, this.#ctx.world.computeView(op.resource));
    }
    sendJson(res, 200, {
      startTime: op.startTime,
      ...(op.endTime ? { endTime: op.endTime } : {}),
      status: op.status,
      ...(op.error ? { error: op.error } : {}),
      name: op.id,
    });
  }

  // ---- MSI ---------------------------------------------------------------------------------------------------------
  #getIdentity(res: ServerResponse, rg: string, name: string): void {
    const world = this.#ctx.world;
    if (!world.resourceGroup(rg)) return armError(res, resourceGroupNotFound(rg));
    const identity = world.getUserAssignedIdentity(world.identityId(rg, name));
    if (!identity) return armError(res, identityNotFound(rg, name));
    sendJson(res, 200, world.identityView(identity));
  }

  async #putIdentity(req: IncomingMessage, res: ServerResponse, rg: string, name: string): Promise<void> {
    const world = this.#ctx.world;
    const parsed = parseJson(await readBody(req));
    if (!parsed.ok || !isRecord(parsed.value)) {
      return armError(res, {
        status: 400,
        code: 'InvalidRequestContent',
        message: 'The request content was invalid and could not be deserialized.',
      });
    }
    if (!world.resourceGroup(rg)) return armError(res, resourceGroupNotFound(rg));
    const body = parsed.value;
    if (typeof body.location !== 'string' || body.location === '') {
      return armError(res, { status: 400, code: 'LocationRequired', message: 'The location property is required for this definition.' });
    }
    const existed = world.getUserAssignedIdentity(world.identityId(rg, name)) !== undefined;
    const tags = isRecord(body.tags)
      ? Object.fromEntries(Object.entries(body.tags).filter((e): e is [string, string] => typeof e[1] === 'string'))
      : undefined;
    const identity = world.createUserAssignedIdentity(rg, name, { location: body.location, ...(tags ? { tags } : {}) });
    sendJson(res, existed ? 200 : 201, world.identityView(identity));
  }

  #deleteIdentity(res: ServerResponse, rg: string, name: string): void {
    const world = this.#ctx.world;
    if (!world.resourceGroup(rg)) return armError(res, resourceGroupNotFound(rg));
    const deleted = world.deleteUserAssignedIdentity(rg, name);
    sendEmpty(res, deleted ? 200 : 204);
  }

  #listIdentities(res: ServerResponse, rg: string | undefined): void {
    const world = this.#ctx.world;
    if (rg !== undefined && !world.resourceGroup(rg)) return armError(res, resourceGroupNotFound(rg));
    sendJson(res, 200, { value: world.listUserAssignedIdentities(rg).map((i) => world.identityView(i)) });
  }
}

export function armError(res: ServerResponse, e: ArmErrorInfo, headers: Record<string, string> = {}): void {
  sendJson(res, e.status, { error: { code: e.code, message: e.message, ...(e.target ? { target: e.target } : {}) } }, headers);
}

function lroFailure(fault: FaultSpec): ArmErrorInfo {
  const body = fault.body;
  if (isRecord(body) && isRecord(body.error) && typeof body.error.code === 'string') {
    return { status: fault.status ?? 500, code: body.error.code, message: String(body.error.message ?? '') };
  }
  return {
    status: fault.status ?? 500,
    code: 'InternalExecutionError',
    message: 'An internal execution error occurred. Please retry later.',
  };
}

function resourceGroupNotFound(rg: string): ArmErrorInfo {
  return { status: 404, code: 'ResourceGroupNotFound', message: `Resource group '${rg}' could not be found.` };
}

function identityNotFound(rg: string, name: string): ArmErrorInfo {
  return {
    status: 404,
    code: 'ResourceNotFound',
    message: `The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/${name}' under resource group '${rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`,
  };
}


// Re-exported for callers that compare IDs the way the emulator does.
export { identityKey };
