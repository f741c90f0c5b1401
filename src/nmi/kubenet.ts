// The kubenet guard: the original refuses to run on kubenet (ARP spoofing, CVE-2021-1677) unless told to, and found
// it by a literal substring of the kubelet's defaults file. We parse those flags as pflag does and also read the CNI
// network the runtime uses (kubelet >= 1.24 has no --network-plugin); src/nmi/core/kubenet.ts holds the rules.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { activeCniNetwork, isKubenetShaped, kubenetInKubeletDefaults, type CniConfFile } from './core/kubenet.js';

export const KUBENET_REFUSAL =
  'AAD Pod Identity is not supported for Kubenet: a pod with CAP_NET_RAW could spoof another pod\'s IP and get its ' +
  'token. Review the security model (docs/security.md) and pass --allow-network-plugin-kubenet=true to run anyway.';

/** Most CNI conf files read, and bytes per file: the directory is root-owned, this only bounds a mistake. */
const MAX_CNI_FILES = 256;
const MAX_CNI_FILE_BYTES = 1 << 20;

export interface KubenetDetection {
  /** Why this node is kubenet-shaped (for the refusal log), or undefined when nothing says so. */
  readonly kubenet: string | undefined;
  /** A CNI network config was found (false: none yet, or the check is off; the runtime may write it later). */
  readonly cniNetworkFound: boolean;
  /** Things worth a log line: unreadable files, skipped CNI files. Never fatal by themselves. */
  readonly notes: readonly string[];
}

export interface KubenetSources {
  /** The kubelet defaults file (`--kubelet-config`); a missing file says nothing. */
  readonly kubeletConfig: string;
  /** The CNI conf dir (`--cni-conf-dir`); '' skips the CNI check. */
  readonly cniConfDir: string;
}

/** Read both sources and say whether the node's pod network is kubenet-shaped. */
export function detectKubenet(sources: KubenetSources): KubenetDetection {
  const notes: string[] = [];
  let defaults = '';
  try {
    defaults = readFileSync(sources.kubeletConfig, 'utf8');
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') notes.push(`cannot read ${sources.kubeletConfig}: ${errorCode(error) ?? String(error)}`);
  }
  const flag = kubenetInKubeletDefaults(defaults);
  if (flag !== undefined) {
    return { kubenet: `${sources.kubeletConfig} sets --network-plugin=kubenet (${flag.where})`, cniNetworkFound: false, notes };
  }
  if (sources.cniConfDir === '') return { kubenet: undefined, cniNetworkFound: false, notes };

  const files = readCniConfFiles(sources.cniConfDir, notes);
  const selection = activeCniNetwork(files);
  for (const s of selection.skipped) notes.push(`CNI config ${join(sources.cniConfDir, s.file)} skipped: ${s.reason}`);
  const network = selection.network;
  if (network === undefined) return { kubenet: undefined, cniNetworkFound: false, notes };
  if (isKubenetShaped(network)) {
    const path = join(sources.cniConfDir, network.file);
    const named = network.name !== undefined ? ` (network ${JSON.stringify(network.name)})` : '';
    return { kubenet: `the CNI network in ${path}${named} starts with the bridge plugin, as kubenet does`, cniNetworkFound: true, notes };
  }
  return { kubenet: undefined, cniNetworkFound: true, notes };
}

function readCniConfFiles(dir: string, notes: string[]): CniConfFile[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') notes.push(`cannot list ${dir}: ${errorCode(error) ?? String(error)}`);
    return [];
  }
  const files: CniConfFile[] = [];
  for (const name of names.filter((n) => /\.(conf|conflist|json)$/.test(n)).sort().slice(0, MAX_CNI_FILES)) {
    const path = join(dir, name);
    try {
      const st = statSync(path);
      if (!st.isFile()) continue;
      if (st.size > MAX_CNI_FILE_BYTES) {
        notes.push(`CNI config ${path} skipped: larger than ${MAX_CNI_FILE_BYTES} bytes`);
        continue;
      }
      files.push({ name, text: readFileSync(path, 'utf8') });
    } catch (error) {
      notes.push(`cannot read ${path}: ${errorCode(error) ?? String(error)}`);
    }
  }
  return files;
}

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
