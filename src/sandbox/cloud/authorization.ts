import type { IncomingMessage, ServerResponse } from 'node:http';
import { isRecord, parseJson, readBody, sendEmpty, sendJson } from './http.js';
import type { ArmErrorInfo } from './identity-patch.js';
import {
  BUILT_IN_ROLES,
  effectivePermissions,
  findRole,
  isGuid,
  normalizeScope,
  scopeCovers,
  type RoleAssignmentRecord,
  type RoleDefinition,
} from './rbac.js';
import type { World } from './world.js';
import { realClock } from '../../common/clock.js';

/** The caller as ARM knows it from the bearer token. */
export interface ArmCaller {
  readonly appId: string;
  readonly objectId: string;
}

const PRINCIPAL_TYPES = ['User', 'Group', 'ServicePrincipal', 'ForeignGroup', 'Device'] as const;

/** 403 as ARM words it when the caller lacks `action` at `scope` (operations.md §1.8). */
export function authorizationFailed(caller: ArmCaller, action: string, scope: string): ArmErrorInfo {
  // For role assignment writes ARM's text names ABAC conditions too.
  const what = /^microsoft\.authorization\/roleassignments\//i.test(action)
    ? 'does not have authorization or an ABAC condition not fulfilled'
    : 'does not have authorization';
  return {
    status: 403,
    code: 'AuthorizationFailed',
    message:
      `The client '${caller.objectId}' with object id '${caller.objectId}' ${what} to perform action '${action}' over scope '${scope}' ` +
      `or the scope is invalid. If access was recently granted, please refresh your credentials.`,
  };
}

/** 403 for user-assigned identities the caller may not assign, after the primary write was allowed. */
export function linkedAuthorizationFailed(caller: ArmCaller, primaryAction: string, primaryScope: string, linkedIds: readonly string[]): ArmErrorInfo {
  return {
    status: 403,
    code: 'LinkedAuthorizationFailed',
    message:
      `The client '${caller.objectId}' with object id '${caller.objectId}' has permission to perform action '${primaryAction}' ` +
      `on scope '${primaryScope}'; however, it does not have permission to perform action ` +
      `'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '${linkedIds.join(',')}' ` +
      `or the linked scope(s) are invalid.`,
  };
}

type Filter = { readonly atScope: boolean; readonly principalId: string | undefined } | { readonly error: ArmErrorInfo };

function parseAssignmentFilter(raw: string | null): Filter {
  let atScope = false;
  let principalId: string | undefined;
  if (raw === null || raw.trim() === '') return { atScope, principalId };
  for (const clause of raw.trim().split(/\s+and\s+/i)) {
    const c = clause.trim();
    let m: RegExpExecArray | null;
    if (/^atScope\(\)$/i.test(c)) atScope = true;
    else if ((m = /^principalId\s+eq\s+'([^']*)'$/i.exec(c))) principalId = m[1];
    else if ((m = /^assignedTo\('([^']*)'\)$/i.exec(c))) principalId = m[1];
    else {
      return {
        error: {
          status: 400,
          code: 'UnsupportedQuery',
          message: `The filter '${raw}' is not supported. Supported filters are atScope(), principalId eq '{id}' and assignedTo('{id}'), joined by 'and'.`,
        },
      };
    }
  }
  return { atScope, principalId };
}

/** Microsoft.Authorization: role assignments, built-in role definitions and the caller's permissions. */
export class AuthorizationApi {
  readonly #world: World;

  constructor(world: World) {
    this.#world = world;
  }

  /** Scope prefix of an ID built at `scope`: '' for the root. */
  #prefix(scope: string): string {
    const s = normalizeScope(scope);
    return s === '/' ? '' : s;
  }

  assignmentView(a: RoleAssignmentRecord): Record<string, unknown> {
    return {
      id: `${this.#prefix(a.scope)}/providers/Microsoft.Authorization/roleAssignments/${a.name}`,
      name: a.name,
      type: 'Microsoft.Authorization/roleAssignments',
      properties: {
        roleDefinitionId: `/subscriptions/${this.#world.subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/${a.roleDefinitionName}`,
        principalId: a.principalId,
        principalType: a.principalType,
        scope: a.scope,
        condition: null,
        conditionVersion: null,
        createdOn: a.createdOn,
        updatedOn: a.createdOn,
        createdBy: a.createdBy ?? null,
        updatedBy: a.createdBy ?? null,
        delegatedManagedIdentityResourceId: null,
        description: a.description ?? null,
      },
    };
  }

  definitionView(d: RoleDefinition, scope: string): Record<string, unknown> {
    // Built-in definitions are named at the subscription asked about, or at the root.
    const sub = /^\/subscriptions\/([^/]+)/i.exec(normalizeScope(scope))?.[1];
    return {
      id: `${sub ? `/subscriptions/${sub}` : ''}/providers/Microsoft.Authorization/roleDefinitions/${d.name}`,
      name: d.name,
      type: 'Microsoft.Authorization/roleDefinitions',
      properties: {
        roleName: d.roleName,
        type: 'BuiltInRole',
        description: d.description,
        assignableScopes: ['/'],
        permissions: d.permissions.map((p) => ({
          actions: [...p.actions],
          notActions: [...p.notActions],
          dataActions: [...p.dataActions],
          notDataActions: [...p.notDataActions],
        })),
        createdOn: '2015-02-02T21:55:09.8806423Z',
        updatedOn: '2024-01-01T00:00:00.0000000Z',
        createdBy: null,
        updatedBy: null,
      },
    };
  }

  getAssignment(res: ServerResponse, scope: string, name: string): void {
    const a = this.#world.roleAssignment(name);
    if (!a || a.scope.toLowerCase() !== normalizeScope(scope).toLowerCase()) {
      return armErr(res, { status: 404, code: 'RoleAssignmentNotFound', message: `The role assignment '${name}' is not found.` });
    }
    sendJson(res, 200, this.assignmentView(a));
  }

  listAssignments(res: ServerResponse, scope: string, filterRaw: string | null): void {
    const filter = parseAssignmentFilter(filterRaw);
    if ('error' in filter) return armErr(res, filter.error);
    const pid = filter.principalId?.toLowerCase();
    const value = this.#world
      .roleAssignments()
      .filter((a) => pid === undefined || a.principalId.toLowerCase() === pid)
      // atScope(): the scope and the scopes above it; otherwise also those below it.
      .filter((a) => scopeCovers(a.scope, scope) || (!filter.atScope && scopeCovers(scope, a.scope)))
      .map((a) => this.assignmentView(a));
    sendJson(res, 200, { value });
  }

  async putAssignment(req: IncomingMessage, res: ServerResponse, scope: string, name: string, caller: ArmCaller): Promise<void> {
    const world = this.#world;
    if (!isGuid(name)) {
      return armErr(res, {
        status: 400,
        code: 'InvalidRoleAssignmentId',
        message: `The role assignment ID '${name}' is not valid. The role assignment ID must be a GUID.`,
      });
    }
    const parsed = parseJson(await readBody(req));
    const props = parsed.ok && isRecord(parsed.value) && isRecord(parsed.value.properties) ? parsed.value.properties : undefined;
    if (!props) {
      return armErr(res, { status: 400, code: 'InvalidRequestContent', message: "The request content was invalid and could not be deserialized: 'properties' is required." });
    }
    for (const field of ['roleDefinitionId', 'principalId'] as const) {
      if (typeof props[field] !== 'string' || props[field] === '') {
        return armErr(res, {
          status: 400,
          code: 'InvalidRequestContent',
          message: `The request content was invalid and could not be deserialized: 'Required property '${field}' not found in JSON.'.`,
        });
      }
    }
    const roleDefinitionId = props.roleDefinitionId as string;
    const principalId = props.principalId as string;
    const guid = roleDefinitionId.split('/').filter((s) => s !== '').pop() ?? '';
    const role = isGuid(guid) ? findRole(guid) : undefined;
    if (!role || !/^(\/subscriptions\/[^/]+)?\/providers\/microsoft\.authorization\/roledefinitions\/[^/]+$/i.test(normalizeScope(roleDefinitionId))) {
      return armErr(res, { status: 400, code: 'RoleDefinitionDoesNotExist', message: `The specified role definition with ID '${guid}' does not exist.` });
    }
    const typeRaw = props.principalType;
    if (typeRaw !== undefined && !(PRINCIPAL_TYPES as readonly unknown[]).includes(typeRaw)) {
      return armErr(res, {
        status: 400,
        code: 'InvalidPrincipalType',
        message: `The principal type '${String(typeRaw)}' is not valid. Valid values are ${PRINCIPAL_TYPES.join(', ')}.`,
      });
    }
    if (typeRaw === undefined && !world.knowsPrincipal(principalId)) {
      return armErr(res, {
        status: 400,
        code: 'PrincipalNotFound',
        message:
          `Principal ${principalId.replaceAll('-', '')} does not exist in the directory ${world.tenantId}. Check that you have the correct principal ID. ` +
          'If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. ' +
          'In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype',
      });
    }
    const normalized = normalizeScope(scope);
    const existing = world.roleAssignment(name);
    if (existing) {
      const same =
        existing.scope.toLowerCase() === normalized.toLowerCase() &&
        existing.principalId.toLowerCase() === principalId.toLowerCase() &&
        existing.roleDefinitionName === role.name;
      if (!same) {
        return armErr(res, {
          status: 400,
          code: 'RoleAssignmentUpdateNotPermitted',
          message: 'Tenant ID, application ID, principal ID, and scope are not allowed to be updated.',
        });
      }
      return sendJson(res, 200, this.assignmentView(existing));
    }
    const equivalent = world.equivalentRoleAssignment(normalized, principalId, role.name);
    if (equivalent) {
      return armErr(res, { status: 409, code: 'RoleAssignmentExists', message: `The role assignment already exists. The ID of the existing role assignment is ${equivalent.name.replaceAll('-', '')}.` });
    }
    const record: RoleAssignmentRecord = {
      name: name.toLowerCase(),
      scope: normalized,
      roleDefinitionName: role.name,
      roleDefinitionId,
      principalId,
      principalType: typeof typeRaw === 'string' ? typeRaw : 'User',
      ...(typeof props.description === 'string' ? { description: props.description } : {}),
      createdOn: new Date(realClock.now()).toISOString(),
      createdBy: caller.objectId,
    };
    world.putRoleAssignment(record);
    sendJson(res, 201, this.assignmentView(record));
  }

  deleteAssignment(res: ServerResponse, scope: string, name: string): void {
    const a = this.#world.roleAssignment(name);
    if (!a || a.scope.toLowerCase() !== normalizeScope(scope).toLowerCase()) return sendEmpty(res, 204);
    this.#world.deleteRoleAssignment(name);
    sendJson(res, 200, this.assignmentView(a));
  }

  getDefinition(res: ServerResponse, scope: string, id: string): void {
    const d = isGuid(id) ? findRole(id) : undefined;
    if (!d) {
      return armErr(res, { status: 404, code: 'RoleDefinitionDoesNotExist', message: `The specified role definition with ID '${id}' does not exist.` });
    }
    sendJson(res, 200, this.definitionView(d, scope));
  }

  listDefinitions(res: ServerResponse, scope: string, filterRaw: string | null): void {
    let defs: readonly RoleDefinition[] = BUILT_IN_ROLES;
    if (filterRaw !== null && filterRaw.trim() !== '') {
      const byName = /^roleName\s+eq\s+'([^']*)'$/i.exec(filterRaw.trim());
      const byType = /^type\s+eq\s+'([^']*)'$/i.exec(filterRaw.trim());
      if (byName) defs = defs.filter((d) => d.roleName.toLowerCase() === (byName[1] ?? '').toLowerCase());
      else if (byType) defs = (byType[1] ?? '').toLowerCase() === 'builtinrole' ? defs : [];
      else {
        return armErr(res, {
          status: 400,
          code: 'UnsupportedQuery',
          message: `The filter '${filterRaw}' is not supported. Supported filters are roleName eq '{name}' and type eq '{type}'.`,
        });
      }
    }
    sendJson(res, 200, { value: defs.map((d) => this.definitionView(d, scope)) });
  }

  /** The caller's own permission blocks at `scope`, one per role that applies there. */
  listPermissions(res: ServerResponse, scope: string, caller: ArmCaller): void {
    const blocks = effectivePermissions(this.#world.roleAssignments(), caller.objectId, scope);
    sendJson(res, 200, {
      value: blocks.map((b) => ({
        actions: [...b.actions],
        notActions: [...b.notActions],
        dataActions: [...b.dataActions],
        notDataActions: [...b.notDataActions],
      })),
    });
  }
}

function armErr(res: ServerResponse, e: ArmErrorInfo): void {
  sendJson(res, e.status, { error: { code: e.code, message: e.message } });
}
