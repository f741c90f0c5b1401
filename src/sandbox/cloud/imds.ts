import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { FaultBook } from './faults.js';
import { runRouted, sendJson, type RoutedRequest } from './http.js';
import { identityKey } from './identity-patch.js';
import type { TokenSigner, TokenSubject } from './signer.js';
import { vmssComputerName, type ComputeResource, type World } from './world.js';

/** Which VM an IMDS listener answers for. A scale-set instance sees the identities of its scale set. */
export type ImdsTarget =
  | { readonly vm: string; readonly resourceGroup?: string }
  | { readonly vmss: string; readonly instanceId: string; readonly resourceGroup?: string };

export interface ImdsListener {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  stop(): Promise<void>;
}

export interface ImdsContext {
  readonly world: World;
  readonly faults: FaultBook;
  readonly signer: TokenSigner;
  readonly log: Logger;
  readonly tokenLifetimeSeconds: number;
}

/** Starts a plain-HTTP listener that answers as `target`'s Instance Metadata Service. */
export async function startImdsListener(
  ctx: ImdsContext,
  target: ImdsTarget,
  opts: { host?: string; port?: number } = {},
): Promise<ImdsListener> {
  const api = new ImdsApi(ctx, target);
  const server = createServer((req, res) => {
    let routed: RoutedRequest;
    try {
      routed = api.route(req, res);
    } catch (err) {
      // A request target that is not a URL path (e.g. `//host` or `/\\x`): refused, never fatal to the emulator.
      ctx.log.warn({ err, target: req.url }, 'imds request target refused');
      sendJson(res, 400, { error: 'invalid_request', error_description: 'Bad request' });
      return;
    }
    void runRouted(routed, req, res, ctx.faults, (err) => ctx.log.error({ err }, 'imds handler failed'));
  });
  const host = opts.host ?? '127.0.0.1';
  await listen(server, host, opts.port ?? 0);
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    host,
    port,
    stop: () => closeServer(server),
  };
}

const TOKEN_PATH = /^\/+metadata\/identity\/oauth2\/token\/?$/i;
const INSTANCE_PATH = /^\/+metadata\/instance\/?$/i;

class ImdsApi {
  readonly #ctx: ImdsContext;
  readonly #target: ImdsTarget;
  readonly #label: string;

  constructor(ctx: ImdsContext, target: ImdsTarget) {
    this.#ctx = ctx;
    this.#target = target;
    this.#label = 'vm' in target ? target.vm : `${target.vmss}/${target.instanceId}`;
  }

  route(req: IncomingMessage, res: ServerResponse): RoutedRequest {
    const url = new URL(req.url ?? '/', 'http://imds.invalid');
    if (TOKEN_PATH.test(url.pathname)) {
      const q = url.searchParams;
      const requested = q.get('client_id') ?? q.get('msi_res_id') ?? q.get('mi_res_id') ?? q.get('object_id') ?? '';
      return {
        operation: 'imds_token',
        target: `${this.#label}:${requested}`,
        dialect: 'imds',
        handle: () => this.#token(req, res, url),
      };
    }
    if (INSTANCE_PATH.test(url.pathname)) {
      return { operation: 'imds_instance', target: this.#label, dialect: 'imds', handle: async () => this.#instance(req, res, url) };
    }
    return {
      operation: 'unknown',
      target: url.pathname,
      dialect: 'imds',
      handle: async () => sendJson(res, 404, { error: 'Not found' }),
    };
  }

  async #token(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if ((req.method ?? 'GET').toUpperCase() !== 'GET') {
      return invalidRequest(res, 405, 'Method not allowed');
    }
    if (!hasMetadataHeader(req)) return invalidRequest(res, 400, 'Required metadata header not specified');
    const q = url.searchParams;
    if (!q.get('api-version')) return invalidRequest(res, 400, "Required query variable 'api-version' is missing");
    const resource = q.get('resource');
    if (!resource) return invalidRequest(res, 400, "Required query variable 'resource' is missing");

    const selectors = (['client_id', 'object_id', 'msi_res_id', 'mi_res_id'] as const).filter((k) => q.get(k));
    if (selectors.length > 1) {
      return invalidRequest(res, 400, 'Only one of client_id, object_id, msi_res_id or mi_res_id can be specified');
    }
    const subject = this.#selectIdentity(q);
    if ('error' in subject) return invalidRequest(res, 400, subject.error);

    const lifetime = this.#ctx.tokenLifetimeSeconds;
    const token = await this.#ctx.signer.issue(subject, resource, lifetime);
    // `resource` is echoed exactly: MSAL's cache keys on it (sdk-notes §2).
    sendJson(res, 200, {
      access_token: token.accessToken,
      client_id: subject.appId,
      expires_in: String(lifetime),
      expires_on: String(token.expiresOn),
      ext_expires_in: String(lifetime),
      not_before: String(token.issuedAt - 300),
      resource,
      token_type: 'Bearer',
    });
  }

  #selectIdentity(q: URLSearchParams): TokenSubject | { error: string } {
    const vm = this.#compute();
    if (!vm) return { error: 'Identity not found' };
    const world = this.#ctx.world;
    const attached = world.attachedIdentities(vm);
    const tenantId = world.tenantId;
    const clientId = q.get('client_id');
    const objectId = q.get('object_id');
    const resId = q.get('msi_res_id') ?? q.get('mi_res_id');

    const fromUser = (u: { id: string; clientId: string; principalId: string }): TokenSubject | { error: string } =>
      // An identity deleted from MSI while still attached can no longer get tokens.
      world.getUserAssignedIdentity(u.id)
        ? { appId: u.clientId, objectId: u.principalId, tenantId, managedIdentityResourceId: u.id }
        : { error: 'Identity not found' };
    const sys = attached.system;
    const fromSystem = sys
      ? { appId: sys.clientId, objectId: sys.principalId, tenantId: sys.tenantId, managedIdentityResourceId: sys.resourceId }
      : undefined;

    if (clientId) {
      const c = clientId.toLowerCase();
      const u = attached.user.find((x) => x.clientId.toLowerCase() === c);
      if (u) return fromUser(u);
      if (fromSystem && fromSystem.appId.toLowerCase() === c) return fromSystem;
      return { error: 'Identity not found' };
    }
    if (objectId) {
      const o = objectId.toLowerCase();
      const u = attached.user.find((x) => x.principalId.toLowerCase() === o);
      if (u) return fromUser(u);
      if (fromSystem && fromSystem.objectId.toLowerCase() === o) return fromSystem;
      return { error: 'Identity not found' };
    }
    if (resId) {
      const u = attached.user.find((x) => identityKey(x.id) === identityKey(resId));
      return u ? fromUser(u) : { error: 'Identity not found' };
    }
    if (fromSystem) return fromSystem;
    if (attached.user.length > 1) {
      return {
        error: 'Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request',
      };
    }
    const only = attached.user[0];
    return only ? fromUser(only) : { error: 'Identity not found' };
  }

  #instance(req: IncomingMessage, res: ServerResponse, url: URL): void {
    if (!hasMetadataHeader(req)) return invalidRequest(res, 400, 'Required metadata header not specified');
    if (!url.searchParams.get('api-version')) {
      return sendJson(res, 400, {
        error: 'Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds',
        'newest-versions': ['2023-07-01', '2021-12-13', '2021-11-15'],
      });
    }
    const vm = this.#compute();
    if (!vm) return sendJson(res, 404, { error: 'Not found' });
    const world = this.#ctx.world;
    const isVmss = !('vm' in this.#target);
    const instanceId = 'instanceId' in this.#target ? this.#target.instanceId : '';
    const resourceId = isVmss ? `${world.computeResourceId(vm)}/virtualMachines/${instanceId}` : world.computeResourceId(vm);
    sendJson(res, 200, {
      compute: {
        azEnvironment: 'AzurePublicCloud',
        location: vm.location,
        name: isVmss ? `${vm.name}_${instanceId}` : vm.name,
        osProfile: { computerName: isVmss ? vmssComputerName(vm.name, instanceId) : vm.name, adminUsername: 'azureuser' },
        osType: 'Linux',
        provider: 'Microsoft.Compute',
        resourceGroupName: vm.resourceGroup,
        resourceId,
        subscriptionId: world.subscriptionId,
        tags: '',
        vmId: vm.vmId,
        vmScaleSetName: isVmss ? vm.name : '',
        vmSize: vm.vmSize,
        zone: '',
      },
      network: { interface: [] },
    });
  }

  #compute(): ComputeResource | undefined {
    const t = this.#target;
    if ('vm' in t) return this.#ctx.world.findCompute('vm', t.vm, t.resourceGroup);
    const ss = this.#ctx.world.findCompute('vmss', t.vmss, t.resourceGroup);
    return ss?.instances.includes(t.instanceId) ? ss : undefined;
  }
}

function hasMetadataHeader(req: IncomingMessage): boolean {
  const v = req.headers.metadata;
  return typeof v === 'string' && v.toLowerCase() === 'true';
}

function invalidRequest(res: ServerResponse, status: number, description: string): void {
  sendJson(res, status, { error: 'invalid_request', error_description: description });
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export { listen };
