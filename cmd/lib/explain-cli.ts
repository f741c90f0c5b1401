// explain's command line, shared by `npm run explain` (cmd/explain.ts) and `kubectl aad-pod-identity explain`.

import { parseArgs } from 'node:util';
import { KNOWN_CLOUD_AUTHORITIES } from '../../src/azure/cloud-config.js';
import { allowedAuthoritySet, parseAllowedAdEndpoints, type CredentialPolicy } from '../../src/crds/credential-policy.js';
import { explain, type ExplainInput } from '../../src/explain/analyze.js';
import { gatherExplainInput, PodNotFoundError } from '../../src/explain/gather.js';
import { renderExplain } from '../../src/explain/render.js';
import { NMI_FLAGS } from '../../src/nmi/config.js';
import { parseTokenRequest } from '../../src/nmi/core/token-request.js';
import { armAccessFor, contextNamespace, kubeConfigFor, UsageError, type CliArm } from './access.js';
import { errorMessage } from '../../src/common/errors.js';

export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

const usage = (prog: string) =>
  `usage: ${prog} [--kubeconfig PATH] [--context NAME] [-n NAMESPACE] [--cloudconfig azure.json [--arm-endpoint URL]] [--sandbox DIR] [--forceNamespaced] ` +
  '[--allow-cross-namespace-secrets] [--allowed-ad-endpoints URL,...] [--namespace-identity-policy off|enforce] ' +
  '[--enable-federated-identities [--service-account-issuer URL]] ' +
  '[--MICNamespace NS] [--mic-service-account NAME] [--client-id ID | --msi-res-id ID | --object-id ID] [--json] <namespace>/<pod> | <pod>\n' +
  '  (give the same --forceNamespaced, --allow-cross-namespace-secrets, --allowed-ad-endpoints, --namespace-identity-policy, --MICNamespace and\n' +
  '   --mic-service-account as MIC and NMI run with;\n' +
  '   --client-id, --msi-res-id, --object-id: what NMI answers a token request naming that identity, else one naming none)\n';

/** Exit codes: 0 the pod gets a token, 3 it does not, 1 pod not found, 2 usage error. */
export async function explainCli(args: readonly string[], io: CliIo, prog = 'npm run explain --'): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...args],
      options: {
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
        namespace: { type: 'string', short: 'n' },
        cloudconfig: { type: 'string' },
        'arm-endpoint': { type: 'string' },
        sandbox: { type: 'string' },
        forceNamespaced: { type: 'boolean', default: false },
        'allow-cross-namespace-secrets': { type: 'boolean', default: false },
        'allowed-ad-endpoints': { type: 'string' },
        'namespace-identity-policy': { type: 'string', default: 'off' },
        'enable-federated-identities': { type: 'boolean', default: false },
        'service-account-issuer': { type: 'string', default: '' },
        MICNamespace: { type: 'string', default: NMI_FLAGS.micNamespace.default },
        'mic-service-account': { type: 'string', default: NMI_FLAGS.micServiceAccount.default },
        'client-id': { type: 'string' },
        'msi-res-id': { type: 'string' },
        'object-id': { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      allowPositionals: true,
    }));
  } catch (error) {
    io.stderr(`explain: ${errorMessage(error)}\n${usage(prog)}`);
    return 2;
  }
  if (values.help) {
    io.stdout(usage(prog));
    return 0;
  }
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const target = positionals[0] ?? '';
  const policyMode = values['namespace-identity-policy'];
  if (target === '' || positionals.length > 1 || target.split('/').length > 2 || target.split('/').some((p) => p === '')) {
    io.stderr(usage(prog));
    return 2;
  }
  if (policyMode !== 'off' && policyMode !== 'enforce') {
    io.stderr(`explain: --namespace-identity-policy: expected one of off, enforce, got '${String(policyMode)}'\n${usage(prog)}`);
    return 2;
  }
  let kubeConfig;
  let arm: CliArm | undefined;
  try {
    kubeConfig = kubeConfigFor({ kubeconfig: str('kubeconfig'), context: str('context'), sandbox: str('sandbox') }, io.env);
    arm = armAccessFor({ cloudconfig: str('cloudconfig'), 'arm-endpoint': str('arm-endpoint'), sandbox: str('sandbox') }, io.env);
  } catch (error) {
    io.stderr(`explain: ${errorMessage(error)}\n`);
    return 2;
  }
  const [namespace, pod] = target.includes('/') ? (target.split('/', 2) as [string, string]) : [str('namespace') ?? contextNamespace(kubeConfig), target];
  const request = tokenRequestOf({ client_id: str('client-id'), msi_res_id: str('msi-res-id'), object_id: str('object-id') });
  if (!request.ok) {
    io.stderr(`explain: ${request.reason}\n${usage(prog)}`);
    return 2;
  }
  const flagErrors: string[] = [];
  const listed = str('allowed-ad-endpoints')?.split(',') ?? [];
  const allowedAdEndpoints = parseAllowedAdEndpoints(listed, flagErrors);
  if (flagErrors.length > 0) {
    io.stderr(`explain: ${flagErrors.join('; ')}\n`);
    return 2;
  }
  // What MIC allows: the known clouds, its cloud config's authority, and the flag.
  const credentials: CredentialPolicy = {
    allowCrossNamespaceSecrets: values['allow-cross-namespace-secrets'] === true,
    allowedAuthorities: allowedAuthoritySet([...KNOWN_CLOUD_AUTHORITIES, ...(arm ? [arm.authority] : []), ...allowedAdEndpoints]),
  };
  try {
    const input = await gatherExplainInput(kubeConfig, namespace, pod, {
      forceNamespaced: values.forceNamespaced === true,
      credentials,
      namespaceIdentityPolicy: policyMode,
      federation: { enabled: values['enable-federated-identities'] === true, issuer: str('service-account-issuer') ?? '' },
      ...(arm ? { arm } : {}),
    });
    const report = explain({
      ...input,
      micNamespace: str('MICNamespace') ?? '',
      micServiceAccount: str('mic-service-account') ?? '',
      ...(request.request !== undefined ? { request: request.request } : {}),
    });
    io.stdout(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderExplain(report));
    return report.nmi.status === 200 ? 0 : 3;
  } catch (error) {
    if (error instanceof PodNotFoundError) {
      io.stderr(`explain: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

/** The identity a token request names, read by NMI's own parser (so a flag means what the query parameter means). */
function tokenRequestOf(
  ids: Record<'client_id' | 'msi_res_id' | 'object_id', string | undefined>,
): { ok: true; request?: ExplainInput['request'] } | { ok: false; reason: string } {
  const given = Object.entries(ids).filter((e): e is [string, string] => e[1] !== undefined);
  if (given.length === 0) return { ok: true };
  if (given.length > 1) return { ok: false, reason: 'give at most one of --client-id, --msi-res-id, --object-id' };
  const parsed = parseTokenRequest(new URLSearchParams([['resource', 'https://management.azure.com/'], ...given]).toString());
  if (!parsed.ok) return { ok: false, reason: parsed.reason };
  const { clientId, resourceId, objectId } = parsed.request;
  return { ok: true, request: { ...(clientId !== undefined ? { clientId } : {}), ...(resourceId !== undefined ? { resourceId } : {}), ...(objectId !== undefined ? { objectId } : {}) } };
}

export { UsageError };
