// Is this node's pod network kubenet-shaped (pods on one L2 bridge, so a pod with CAP_NET_RAW can ARP-spoof another
// pod's IP, CVE-2021-1677)? Two pure readings, both fed by src/nmi/kubenet.ts:
//  1. the kubelet's flags as written in its defaults file (/etc/default/kubelet: systemd EnvironmentFile lines such as
//     `KUBELET_FLAGS=--a --network-plugin=kubenet`), parsed the way pflag reads `--network-plugin`;
//  2. the CNI network the container runtime uses (kubelet >= 1.24 has no --network-plugin): the first valid file of
//     the CNI conf dir in name order, kubenet-shaped when its first plugin is `bridge`.

export interface KubeletFlagFinding {
  /** The variable (`KUBELET_FLAGS`) or `line N` the flag was read from. */
  readonly where: string;
  /** The effective --network-plugin value there (pflag: the last occurrence wins; `--network-plugin=` is ''). */
  readonly plugin: string;
}

/**
 * Every effective --network-plugin value in a kubelet defaults file: one per variable (its last assignment wins, as
 * in an EnvironmentFile) and one per line that is not an assignment. Which variables the kubelet's unit expands is
 * not known here, so callers treat any of them saying kubenet as kubenet.
 */
export function networkPluginsInKubeletDefaults(text: string): KubeletFlagFinding[] {
  const byVariable = new Map<string, string | undefined>();
  const bare: KubeletFlagFinding[] = [];
  for (const entry of parseEnvironmentFile(text)) {
    const plugin = networkPluginFromArgs(splitWords(entry.value));
    if (entry.name === undefined) {
      if (plugin !== undefined) bare.push({ where: `line ${entry.line}`, plugin });
    } else {
      byVariable.set(entry.name, plugin);
    }
  }
  const findings: KubeletFlagFinding[] = [];
  for (const [name, plugin] of byVariable) if (plugin !== undefined) findings.push({ where: name, plugin });
  return [...findings, ...bare];
}

/** The kubenet finding of a kubelet defaults file, if any. The kubelet matches plugin names exactly. */
export function kubenetInKubeletDefaults(text: string): KubeletFlagFinding | undefined {
  return networkPluginsInKubeletDefaults(text).find((f) => f.plugin === 'kubenet');
}

/**
 * The --network-plugin value pflag would leave after parsing these arguments, or undefined when none sets it.
 * pflag forms: `--network-plugin=v`, `--network-plugin v` (the next argument, whatever it starts with),
 * `--network-plugin=` (empty); `--network_plugin` too (the kubelet normalises `_` to `-`); parsing stops at `--`.
 * A single dash is pflag's shorthand syntax (`-network-plugin` fails the kubelet), so it sets nothing.
 */
export function networkPluginFromArgs(args: readonly string[]): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? '';
    if (arg === '--') break;
    if (!arg.startsWith('--')) continue;
    const body = arg.slice(2);
    const eq = body.indexOf('=');
    const name = (eq === -1 ? body : body.slice(0, eq)).replaceAll('_', '-');
    if (name !== 'network-plugin') continue;
    if (eq !== -1) value = body.slice(eq + 1);
    else if (i + 1 < args.length) value = args[++i];
    // A trailing `--network-plugin` with no value is a kubelet start error, not a setting.
  }
  return value;
}

export interface EnvironmentEntry {
  /** The variable name, or undefined for a line that is not an assignment (its whole text is the value). */
  readonly name: string | undefined;
  readonly value: string;
  /** 1-based line the entry starts on. */
  readonly line: number;
}

/**
 * A systemd EnvironmentFile: `#`/`;` comment lines, `NAME=value` (an optional `export ` prefix), values unquoted
 * (backslash escapes the next character, a trailing backslash continues the line) or wholly in '…' or "…" (which may
 * span lines; in "…" a backslash escapes `"`, `\`, `$` and a backquote). Quotes inside an unquoted value stay, for the
 * unit's `$VAR` word splitting (splitWords) to remove.
 */
export function parseEnvironmentFile(text: string): EnvironmentEntry[] {
  const entries: EnvironmentEntry[] = [];
  let i = 0;
  let line = 1;
  const n = text.length;
  const atEol = () => i >= n || text[i] === '\n';
  while (i < n) {
    while (i < n && (text[i] === ' ' || text[i] === '\t' || text[i] === '\r' || text[i] === '\n')) {
      if (text[i] === '\n') line++;
      i++;
    }
    if (i >= n) break;
    const startLine = line;
    if (text[i] === '#' || text[i] === ';') {
      while (!atEol()) i++;
      continue;
    }
    const rest = text.slice(i, text.indexOf('\n', i) === -1 ? n : text.indexOf('\n', i));
    const assignment = /^(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*/.exec(rest);
    let name: string | undefined;
    if (assignment) {
      name = assignment[1];
      i += assignment[0].length;
    }
    let value = '';
    const quote = text[i];
    if (name !== undefined && (quote === '"' || quote === "'")) {
      i++;
      while (i < n && text[i] !== quote) {
        if (text[i] === '\n') line++;
        if (quote === '"' && text[i] === '\\' && i + 1 < n && '"\\$`'.includes(text[i + 1] ?? '')) i++;
        else if (quote === '"' && text[i] === '\\' && text[i + 1] === '\n') {
          i += 2;
          line++;
          continue;
        }
        value += text[i];
        i++;
      }
      i++;
      // Anything after the closing quote up to the end of the line is kept, unquoted.
      while (!atEol()) value += text[i++];
    } else {
      while (!atEol()) {
        if (text[i] === '\\' && i + 1 < n) {
          if (text[i + 1] === '\n') {
            i += 2;
            line++;
            continue;
          }
          if (name !== undefined) {
            value += text[i + 1];
            i += 2;
            continue;
          }
        }
        value += text[i++];
      }
    }
    entries.push({ name, value: value.trimEnd(), line: startLine });
  }
  return entries;
}

/**
 * Split a value into words as a unit's `$VAR` expansion (and a shell) does: whitespace separates, '…' is literal,
 * "…" keeps whitespace with backslash escapes, an unquoted backslash escapes the next character.
 */
export function splitWords(value: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i] ?? '';
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    inWord = true;
    if (c === "'") {
      const end = value.indexOf("'", i + 1);
      const stop = end === -1 ? value.length : end;
      word += value.slice(i + 1, stop);
      i = stop;
    } else if (c === '"') {
      i++;
      while (i < value.length && value[i] !== '"') {
        if (value[i] === '\\' && i + 1 < value.length && '"\\$`'.includes(value[i + 1] ?? '')) i++;
        word += value[i];
        i++;
      }
    } else if (c === '\\' && i + 1 < value.length) {
      word += value[++i];
    } else {
      word += c;
    }
  }
  if (inWord) words.push(word);
  return words;
}

export interface CniConfFile {
  readonly name: string;
  readonly text: string;
}

export interface CniNetwork {
  /** The file the runtime uses. */
  readonly file: string;
  /** The network's `name`, when it has one. */
  readonly name: string | undefined;
  /** Plugin `type`s in chain order. */
  readonly pluginTypes: readonly string[];
}

export interface CniSelection {
  readonly network: CniNetwork | undefined;
  /** Files passed over, with why (the runtime skips them too). */
  readonly skipped: readonly { readonly file: string; readonly reason: string }[];
}

const CNI_EXTENSIONS = ['.conf', '.conflist', '.json'];

/**
 * The network a CRI runtime (containerd, CRI-O) uses from a CNI conf dir: files ending .conf, .conflist or .json in
 * byte order of their names, the first one that parses into at least one plugin with a `type`. A .conflist holds
 * `plugins: [...]`; the other two hold one plugin's config.
 */
export function activeCniNetwork(files: readonly CniConfFile[]): CniSelection {
  const skipped: { file: string; reason: string }[] = [];
  const candidates = files
    .filter((f) => CNI_EXTENSIONS.some((ext) => f.name.endsWith(ext)))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const f of candidates) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(f.text);
    } catch {
      skipped.push({ file: f.name, reason: 'not JSON' });
      continue;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      skipped.push({ file: f.name, reason: 'not a JSON object' });
      continue;
    }
    const record = parsed as Record<string, unknown>;
    const plugins = f.name.endsWith('.conflist') ? record['plugins'] : [record];
    if (!Array.isArray(plugins) || plugins.length === 0) {
      skipped.push({ file: f.name, reason: 'no plugins' });
      continue;
    }
    const types = plugins.map((p) => (typeof p === 'object' && p !== null ? (p as Record<string, unknown>)['type'] : undefined));
    if (!types.every((t): t is string => typeof t === 'string' && t !== '')) {
      skipped.push({ file: f.name, reason: 'a plugin without a type' });
      continue;
    }
    const name = typeof record['name'] === 'string' ? record['name'] : undefined;
    return { network: { file: f.name, name, pluginTypes: types }, skipped };
  }
  return { network: undefined, skipped };
}

/**
 * Kubenet-shaped: the chain starts with the `bridge` plugin (what kubenet, and AKS' containerd kubenet template,
 * configure: bridge cbr0 + host-local IPAM + portmap). Azure CNI, Calico, Cilium and the rest start with their own
 * plugin; plugins that delegate to bridge internally (flannel, multus) are not recognised.
 */
export function isKubenetShaped(network: CniNetwork): boolean {
  return network.pluginTypes[0] === 'bridge';
}
