// `npm run explain -- [--kubeconfig PATH] [--cloudconfig azure.json [--arm-endpoint URL]] [--sandbox DIR]
//   [--forceNamespaced] [--namespace-identity-policy off|enforce] [--json] <namespace>/<pod>`: why a pod does or does not get a token.
// Works against any cluster the kubeconfig points at; ARM is asked when a cloud config is given (--sandbox DIR reads
// the sandbox's kubeconfig, azure.json, CA and ARM endpoint from DIR).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { KNOWN_CLOUD_AUTHORITIES, parseCloudConfig } from '../src/azure/cloud-config.js';
import { armCredential } from '../src/azure/credentials.js';
import { allowedAuthoritySet, parseAllowedAdEndpoints, type CredentialPolicy } from '../src/crds/credential-policy.js';
import { explain } from '../src/explain/analyze.js';
import { gatherExplainInput, PodNotFoundError, type ArmAccess } from '../src/explain/gather.js';
import { renderExplain } from '../src/explain/render.js';
import { loadKubeConfig } from '../src/kube/index.js';

const USAGE =
  'usage: npm run explain -- [--kubeconfig PATH] [--cloudconfig azure.json [--arm-endpoint URL]] [--sandbox DIR] [--forceNamespaced] ' +
  '[--allow-cross-namespace-secrets] [--allowed-ad-endpoints URL,...] [--namespace-identity-policy off|enforce] [--json] <namespace>/<pod>\n' +
  '  (give the same --forceNamespaced, --allow-cross-namespace-secrets, --allowed-ad-endpoints and --namespace-identity-policy as MIC and NMI run with)\n';

async function main(): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: process.argv.slice(2),
      options: {
        kubeconfig: { type: 'string' },
        cloudconfig: { type: 'string' },
        'arm-endpoint': { type: 'string' },
        sandbox: { type: 'string' },
        forceNamespaced: { type: 'boolean', default: false },
        'allow-cross-namespace-secrets': { type: 'boolean', default: false },
        'allowed-ad-endpoints': { type: 'string' },
        'namespace-identity-policy': { type: 'string', default: 'off' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      allowPositionals: true,
    }));
  } catch (error) {
    process.stderr.write(`explain: ${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const target = positionals[0] ?? '';
  const [namespace, pod] = target.includes('/') ? target.split('/', 2) : ['default', target];
  if (!pod || !namespace) {
    process.stderr.write(USAGE);
    return 2;
  }
  const policyMode = values['namespace-identity-policy'];
  if (policyMode !== 'off' && policyMode !== 'enforce') {
    process.stderr.write(`explain: --namespace-identity-policy: expected one of off, enforce, got '${String(policyMode)}'\n${USAGE}`);
    return 2;
  }
  const sandboxDir = typeof values.sandbox === 'string' ? values.sandbox : undefined;
  const kubeconfigPath = typeof values.kubeconfig === 'string' ? values.kubeconfig : sandboxDir ? join(sandboxDir, 'kubeconfig') : undefined;
  const kubeConfig = loadKubeConfig(kubeconfigPath ? { kubeconfigPath } : {});

  let arm: (ArmAccess & { authority: string }) | undefined;
  try {
    arm = armAccess(values, sandboxDir);
  } catch (error) {
    process.stderr.write(`explain: ${error instanceof Error ? error.message : String(error)}\n`);
    return 2;
  }
  const flagErrors: string[] = [];
  const listed = typeof values['allowed-ad-endpoints'] === 'string' ? values['allowed-ad-endpoints'].split(',') : [];
  const allowedAdEndpoints = parseAllowedAdEndpoints(listed, flagErrors);
  if (flagErrors.length > 0) {
    process.stderr.write(`explain: ${flagErrors.join('; ')}\n`);
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
      ...(arm ? { arm } : {}),
    });
    const report = explain(input);
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderExplain(report));
    return report.nmi.status === 200 ? 0 : 3;
  } catch (error) {
    if (error instanceof PodNotFoundError) {
      process.stderr.write(`explain: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

/** ARM access from --cloudconfig (+ --arm-endpoint, AZURE_AUTHORITY_HOST) or from a sandbox state directory. */
function armAccess(
  values: Record<string, string | boolean | undefined>,
  sandboxDir: string | undefined,
): (ArmAccess & { authority: string }) | undefined {
  let cloudconfig = typeof values.cloudconfig === 'string' ? values.cloudconfig : undefined;
  let armEndpoint = typeof values['arm-endpoint'] === 'string' ? values['arm-endpoint'] : undefined;
  let caPem: string | undefined;
  let authority = process.env['AZURE_AUTHORITY_HOST'];
  if (sandboxDir) {
    const endpoints = JSON.parse(readFileSync(join(sandboxDir, 'endpoints.json'), 'utf8')) as { azure?: { url?: string } };
    cloudconfig ??= join(sandboxDir, 'azure.json');
    armEndpoint ??= endpoints.azure?.url;
    authority ??= endpoints.azure?.url;
    caPem = readFileSync(join(sandboxDir, 'ca.pem'), 'utf8');
  }
  if (!cloudconfig) return undefined;
  const fileText = readFileSync(cloudconfig, 'utf8');
  const base = parseCloudConfig({ fileText, filePath: cloudconfig, env: process.env });
  const cloud = armEndpoint
    ? parseCloudConfig({
        fileText,
        filePath: cloudconfig,
        env: process.env,
        customEndpoints: { resourceManagerEndpoint: armEndpoint, activeDirectoryEndpoint: authority ?? base.environment.activeDirectoryEndpoint },
      })
    : base;
  return {
    credential: armCredential(cloud, caPem ? { caPem, tokenTimeoutMs: 20_000 } : { tokenTimeoutMs: 20_000 }),
    endpoint: cloud.environment.resourceManagerEndpoint,
    authority: cloud.environment.activeDirectoryEndpoint,
    ...(caPem ? { caPem } : {}),
  };
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`explain: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
