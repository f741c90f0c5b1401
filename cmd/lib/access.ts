// How the admin commands (explain, doctor, the kubectl plugin) reach the cluster and Azure: the kubeconfig as kubectl
// resolves it, and ARM as MIC does (azure.json, the same credential code), or both from a sandbox state directory.

import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { parseCloudConfig, type AzureCloudConfig } from '../../src/azure/cloud-config.js';
import { armCredential } from '../../src/azure/credentials.js';
import type { ArmAccess } from '../../src/explain/gather.js';
import { errorMessage } from '../../src/common/errors.js';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface KubeAccessFlags {
  readonly kubeconfig?: string | undefined;
  readonly context?: string | undefined;
  readonly sandbox?: string | undefined;
}

/**
 * kubectl's rules: --kubeconfig alone, no merge; else every file of KUBECONFIG merged with the first file winning
 * for every key (current-context too; client-node's loadFromDefault lets the last win and throws on duplicates);
 * else ~/.kube/config. --context replaces current-context and must name a context.
 */
export function kubeConfigFor(flags: KubeAccessFlags, env: Readonly<Record<string, string | undefined>>): KubeConfig {
  const explicit = flags.kubeconfig ?? (flags.sandbox ? join(flags.sandbox, 'kubeconfig') : undefined);
  const files = explicit
    ? [explicit]
    : (env['KUBECONFIG'] ?? '').split(delimiter).filter((f) => f !== '').concat((env['KUBECONFIG'] ?? '') === '' ? [join(env['HOME'] ?? homedir(), '.kube', 'config')] : []);
  const merged = { clusters: [] as KubeConfig['clusters'], users: [] as KubeConfig['users'], contexts: [] as KubeConfig['contexts'], currentContext: '' };
  let loaded = 0;
  for (const file of files) {
    const kc = new KubeConfig();
    try {
      kc.loadFromFile(file);
    } catch (error) {
      if (explicit || (error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new UsageError(`cannot load kubeconfig ${file}: ${errorMessage(error)}`);
      }
      continue;
    }
    loaded++;
    const add = <T extends { name: string }>(into: T[], from: readonly T[]) => {
      for (const item of from) if (!into.some((i) => i.name === item.name)) into.push(item);
    };
    add(merged.clusters as { name: string }[], kc.clusters);
    add(merged.users as { name: string }[], kc.users);
    add(merged.contexts as { name: string }[], kc.contexts);
    if (merged.currentContext === '') merged.currentContext = kc.currentContext;
  }
  if (loaded === 0) throw new UsageError(`no kubeconfig found (looked at ${files.join(', ')}); pass --kubeconfig`);
  const kc = new KubeConfig();
  kc.loadFromOptions(merged);
  if (flags.context) {
    if (!kc.contexts.some((c) => c.name === flags.context)) throw new UsageError(`context "${flags.context}" does not exist in the kubeconfig`);
    kc.setCurrentContext(flags.context);
  }
  if (!kc.getCurrentCluster()) throw new UsageError('the kubeconfig has no current context or cluster; pass --context');
  return kc;
}

/** The namespace of the current context, as kubectl defaults -n to it. */
export function contextNamespace(kc: KubeConfig): string {
  return kc.getContextObject(kc.currentContext)?.namespace || 'default';
}

export interface ArmFlags {
  readonly cloudconfig?: string | undefined;
  readonly 'arm-endpoint'?: string | undefined;
  readonly sandbox?: string | undefined;
}

export type CliArm = ArmAccess & { readonly authority: string; readonly cloud: AzureCloudConfig };

/** ARM access from --cloudconfig (+ --arm-endpoint, AZURE_AUTHORITY_HOST) or from a sandbox state directory. */
export function armAccessFor(flags: ArmFlags, env: Readonly<Record<string, string | undefined>>): CliArm | undefined {
  let cloudconfig = flags.cloudconfig;
  let armEndpoint = flags['arm-endpoint'];
  let caPem: string | undefined;
  let authority = env['AZURE_AUTHORITY_HOST'];
  if (flags.sandbox) {
    const endpoints = JSON.parse(readFileSync(join(flags.sandbox, 'endpoints.json'), 'utf8')) as { azure?: { url?: string } };
    cloudconfig ??= join(flags.sandbox, 'azure.json');
    armEndpoint ??= endpoints.azure?.url;
    authority ??= endpoints.azure?.url;
    caPem = readFileSync(join(flags.sandbox, 'ca.pem'), 'utf8');
  }
  if (!cloudconfig) return undefined;
  let fileText: string;
  try {
    fileText = readFileSync(cloudconfig, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read --cloudconfig ${cloudconfig}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  const base = parseCloudConfig({ fileText, filePath: cloudconfig, env });
  const cloud = armEndpoint
    ? parseCloudConfig({
        fileText,
        filePath: cloudconfig,
        env,
        customEndpoints: { resourceManagerEndpoint: armEndpoint, activeDirectoryEndpoint: authority ?? base.environment.activeDirectoryEndpoint },
      })
    : base;
  return {
    cloud,
    credential: armCredential(cloud, caPem ? { caPem, tokenTimeoutMs: 20_000 } : { tokenTimeoutMs: 20_000 }),
    endpoint: cloud.environment.resourceManagerEndpoint,
    authority: cloud.environment.activeDirectoryEndpoint,
    ...(caPem ? { caPem } : {}),
  };
}
