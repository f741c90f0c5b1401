// Reads the import lines of every file under src/ and cmd/ and fails on an edge DESIGN.md forbids.
//
// Decisions recorded here:
// - src/crds may import `node:crypto` (names.ts hashes over-long AzureAssignedIdentity names): it is
//   deterministic and does no I/O. Nothing else outside src/crds.
// - The pure cores (src/mic/core, src/nmi/core) import only themselves and src/crds: no packages (not even
//   type-only), no node: modules, no logger; their code uses no `process`, no `Date.now()` / `new Date()`,
//   no `console`.
// - Shared layers (crds, common, kube, azure) never import mic, nmi, sandbox or cmd: shared code goes down.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('architecture', () => {
  it('has no forbidden import edge or process/clock access in src/ and cmd/', () => {
    const files = ['src', 'cmd'].flatMap((dir) => sourceFiles(join(ROOT, dir)));
    expect(files.length).toBeGreaterThan(0);
    const violations = checkArchitecture(
      files.map((abs) => ({ path: relative(ROOT, abs).split('\\').join('/'), text: readFileSync(abs, 'utf8') })),
    );
    expect(violations).toEqual([]);
  });

  describe('the checker itself', () => {
    const check = (path: string, text: string): string[] => checkArchitecture([{ path, text }]);

    it('rejects a package, a node: module and a logger in the pure cores', () => {
      expect(check('src/mic/core/plan.ts', `import { pino } from 'pino';\n`)).toHaveLength(1);
      expect(check('src/nmi/core/decide.ts', `import type { Foo } from '@azure/identity';\n`)).toHaveLength(1);
      expect(check('src/mic/core/plan.ts', `import { readFileSync } from 'node:fs';\n`)).toHaveLength(1);
      expect(check('src/mic/core/plan.ts', `import { createLogger } from '../../common/log.js';\n`)).toHaveLength(1);
      expect(check('src/mic/core/plan.ts', `import { x } from '../reconciler.js';\n`)).toHaveLength(1);
    });

    it('lets the pure cores import src/crds and themselves, including multi-line imports', () => {
      const text = `import type {\n  PodView,\n  NodeView,\n} from '../../crds/types.js';\nimport { a } from './match.js';\n`;
      expect(check('src/mic/core/plan.ts', text)).toEqual([]);
    });

    it('rejects process, Date.now(), new Date() and console in the pure cores, but not in comments or strings', () => {
      expect(check('src/nmi/core/decide.ts', `const t = Date.now();\n`)).toHaveLength(1);
      expect(check('src/nmi/core/decide.ts', `const t = new Date();\n`)).toHaveLength(1);
      expect(check('src/mic/core/plan.ts', `if (process.platform) {}\n`)).toHaveLength(1);
      expect(check('src/mic/core/plan.ts', `console.log('x');\n`)).toHaveLength(1);
      expect(check('src/mic/core/plan.ts', `// Date.now() is not used here; process.env neither\nconst s = 'console.log';\n`)).toEqual([]);
      expect(check('src/mic/core/plan.ts', `const d = new Date(snapshot.now);\n`)).toEqual([]);
      expect(check('src/mic/core/plan.ts', 'const s = `at ${Date.now()}`;\n')).toHaveLength(1);
      expect(check('src/mic/core/plan.ts', 'const s = `${a ? `x${b}` : "y"} Date.now()`;\n')).toEqual([]);
    });

    it('rejects mic importing nmi and nmi importing mic', () => {
      expect(check('src/mic/reconciler.ts', `import { x } from '../nmi/server.js';\n`)).toHaveLength(1);
      expect(check('src/nmi/server.ts', `export { y } from '../mic/core/plan.js';\n`)).toHaveLength(1);
      expect(check('src/nmi/server.ts', `const m = await import('../mic/mic.js');\n`)).toHaveLength(1);
    });

    it('keeps src/crds free of imports other than itself and node:crypto', () => {
      expect(check('src/crds/names.ts', `import { createHash } from 'node:crypto';\nimport { a } from './types.js';\n`)).toEqual([]);
      expect(check('src/crds/names.ts', `import { readFileSync } from 'node:fs';\n`)).toHaveLength(1);
      expect(check('src/crds/names.ts', `import YAML from 'yaml';\n`)).toHaveLength(1);
      expect(check('src/crds/names.ts', `import { x } from '../common/errors.js';\n`)).toHaveLength(1);
    });

    it('keeps the sandbox and the product apart', () => {
      expect(check('src/sandbox/apiserver/server.ts', `import { normalizeBinding } from '../../crds/normalize.js';\n`)).toHaveLength(1);
      expect(check('src/sandbox/kubelet.ts', `import { Reflector } from '../kube/reflector.js';\n`)).toHaveLength(1);
      expect(check('src/sandbox/index.ts', `import { x } from '../common/log.js';\n`)).toEqual([]);
      expect(check('src/mic/mic.ts', `import { startApiServer } from '../sandbox/apiserver/index.js';\n`)).toHaveLength(1);
      expect(check('cmd/sandbox.ts', `import { startWorld } from '../src/sandbox/index.js';\n`)).toEqual([]);
    });

    it('keeps shared layers below mic and nmi', () => {
      expect(check('src/kube/store.ts', `import { x } from '../mic/core/plan.js';\n`)).toHaveLength(1);
      expect(check('src/common/http.ts', `import { x } from '../nmi/server.js';\n`)).toHaveLength(1);
    });

    it('lets only cmd/ read process.argv/process.env or call process.exit', () => {
      expect(check('src/nmi/config.ts', `const port = process.env.PORT;\n`)).toHaveLength(1);
      expect(check('src/mic/mic.ts', `process.exit(1);\n`)).toHaveLength(1);
      expect(check('src/kube/kubeconfig.ts', `const { env } = process;\n`)).toHaveLength(1);
      expect(check('src/kube/kubeconfig.ts', `const a = process['argv'];\n`)).toHaveLength(1);
      expect(check('src/mic/mic.ts', 'log(`port ${process.env.PORT}`);\n')).toHaveLength(1);
      expect(check('cmd/mic.ts', `const cfg = parse(process.argv.slice(2), process.env);\nprocess.exit(0);\n`)).toEqual([]);
    });
  });
});

/* ------------------------------------------------------------------------------------------- checker */

interface SourceFile {
  /** Repo-relative, forward slashes. */
  readonly path: string;
  readonly text: string;
}

type Area =
  | 'cmd'
  | 'mic-core'
  | 'nmi-core'
  | 'mic'
  | 'nmi'
  | 'crds'
  | 'common'
  | 'kube'
  | 'azure'
  | 'sandbox'
  | 'other-src'
  | 'outside';

const CRDS_ALLOWED_BUILTINS = new Set(['node:crypto']);

function checkArchitecture(files: readonly SourceFile[]): string[] {
  const out: string[] = [];
  for (const file of files) {
    const from = areaOf(file.path);
    const code = stripCommentsAndStrings(file.text);
    for (const spec of importSpecifiers(file.text)) {
      const target = resolveSpecifier(file.path, spec);
      const problem = forbiddenEdge(from, target, spec);
      if (problem !== null) out.push(`${file.path}: imports '${spec}': ${problem}`);
    }
    if (from === 'mic-core' || from === 'nmi-core') {
      for (const [pattern, what] of CORE_CODE_RULES) {
        if (pattern.test(code)) out.push(`${file.path}: the pure core must not use ${what}`);
      }
    }
    if (from !== 'cmd' && from !== 'outside') {
      for (const [pattern, what] of PROCESS_RULES) {
        if (pattern.test(code)) out.push(`${file.path}: only cmd/ may use ${what}`);
      }
    }
  }
  return out;
}

const CORE_CODE_RULES: ReadonlyArray<readonly [RegExp, string]> = [
  [/\bprocess\b/, '`process`'],
  [/\bDate\s*\.\s*now\s*\(/, '`Date.now()` (take `now` from the snapshot)'],
  [/\bnew\s+Date\s*\(\s*\)/, '`new Date()` (take `now` from the snapshot)'],
  [/\bconsole\s*\./, '`console` (return reasons; the shell logs)'],
];

const PROCESS_RULES: ReadonlyArray<readonly [RegExp, string]> = [
  [/\bprocess\s*(?:\?\.|\.)\s*(?:argv|env|exit)\b/, 'process.argv / process.env / process.exit'],
  // Strings are blanked before matching, so any indexed access of process counts.
  [/\bprocess\s*\[/, 'indexed access of `process` (process["env"] and the like)'],
  [/=\s*process\s*[;,\n)]/, 'an alias of `process` (which hides argv/env/exit access)'],
];

type Target =
  | { kind: 'builtin'; name: string }
  | { kind: 'package'; name: string }
  | { kind: 'file'; path: string; area: Area };

function forbiddenEdge(from: Area, target: Target, spec: string): string | null {
  const isCore = from === 'mic-core' || from === 'nmi-core';
  if (isCore) {
    if (target.kind !== 'file') return 'the pure cores import only src/crds and themselves (no packages, no node: modules)';
    if (target.area === 'crds' || target.area === from) return null;
    return `the pure cores import only src/crds and themselves, not ${target.area}`;
  }
  if (from === 'crds') {
    if (target.kind === 'builtin' && CRDS_ALLOWED_BUILTINS.has(target.name)) return null;
    if (target.kind === 'file' && target.area === 'crds') return null;
    return 'src/crds imports nothing outside itself (node:crypto excepted)';
  }
  if (target.kind !== 'file') return null;
  const to = target.area;
  const mic = (a: Area): boolean => a === 'mic' || a === 'mic-core';
  const nmi = (a: Area): boolean => a === 'nmi' || a === 'nmi-core';
  if (mic(from) && nmi(to)) return 'mic never imports nmi (shared code goes into crds/kube/common/azure)';
  if (nmi(from) && mic(to)) return 'nmi never imports mic (shared code goes into crds/kube/common/azure)';
  if (from === 'sandbox' && (mic(to) || nmi(to) || to === 'crds' || to === 'kube')) {
    return 'the sandbox is written from the protocol and imports nothing from mic, nmi, crds or kube';
  }
  if (to === 'sandbox' && from !== 'sandbox' && from !== 'cmd' && from !== 'outside') {
    return 'the product never imports the sandbox';
  }
  const shared = from === 'common' || from === 'kube' || from === 'azure';
  if (shared && (mic(to) || nmi(to) || to === 'sandbox' || to === 'cmd')) {
    return `shared code (${from}) must not depend on ${to}`;
  }
  if (from !== 'cmd' && from !== 'outside' && to === 'cmd') return 'nothing under src imports cmd/';
  return null;
}

function areaOf(path: string): Area {
  if (path.startsWith('cmd/')) return 'cmd';
  if (path.startsWith('src/mic/core/')) return 'mic-core';
  if (path.startsWith('src/nmi/core/')) return 'nmi-core';
  for (const area of ['mic', 'nmi', 'crds', 'common', 'kube', 'azure', 'sandbox'] as const) {
    if (path.startsWith(`src/${area}/`)) return area;
  }
  return path.startsWith('src/') ? 'other-src' : 'outside';
}

function resolveSpecifier(fromPath: string, spec: string): Target {
  if (spec.startsWith('.') || spec.startsWith('/')) {
    const path = posix.normalize(posix.join(posix.dirname(fromPath), spec));
    return { kind: 'file', path, area: areaOf(path) };
  }
  if (spec.startsWith('node:')) return { kind: 'builtin', name: spec };
  // Bare built-ins without the node: prefix count as built-ins too.
  if (BARE_BUILTINS.has(spec.split('/')[0] ?? '')) return { kind: 'builtin', name: `node:${spec}` };
  return { kind: 'package', name: spec };
}

const BARE_BUILTINS = new Set([
  'fs', 'path', 'os', 'http', 'https', 'http2', 'net', 'tls', 'dns', 'child_process', 'crypto', 'url', 'util',
  'events', 'stream', 'zlib', 'timers', 'worker_threads', 'cluster', 'dgram', 'readline', 'async_hooks', 'process',
]);

/** Module specifiers of static imports/exports (multi-line too), side-effect imports, dynamic import(), require(). */
function importSpecifiers(text: string): string[] {
  const specs: string[] = [];
  const patterns = [
    /^\s*(?:import|export)\s+(?:type\s+)?[^'"`;]*?\sfrom\s*['"]([^'"]+)['"]/gm,
    /^\s*import\s*['"]([^'"]+)['"]/gm,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const pattern of patterns) {
    for (const m of text.matchAll(pattern)) if (m[1] !== undefined) specs.push(m[1]);
  }
  return specs;
}

/**
 * Blanks comments and string contents so code rules do not fire on prose; `${...}` inside template literals stays
 * code. Regex literals are left alone.
 */
function stripCommentsAndStrings(text: string): string {
  return scanCode(text, 0, false).out;
}

function scanCode(text: string, start: number, untilBrace: boolean): { out: string; end: number } {
  let out = '';
  let depth = 0;
  let i = start;
  while (i < text.length) {
    const c = text[i];
    const next = text[i + 1];
    if (c === '/' && next === '/') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '/' && next === '*') {
      const end = text.indexOf('*/', i + 2);
      i = end === -1 ? text.length : end + 2;
      out += ' ';
    } else if (c === "'" || c === '"') {
      i++;
      while (i < text.length && text[i] !== c && text[i] !== '\n') i += text[i] === '\\' ? 2 : 1;
      out += `${c}${c}`;
      i++;
    } else if (c === '`') {
      out += '`';
      i++;
      while (i < text.length && text[i] !== '`') {
        if (text[i] === '\\') i += 2;
        else if (text[i] === '$' && text[i + 1] === '{') {
          const inner = scanCode(text, i + 2, true);
          out += ` ${inner.out} `;
          i = inner.end + 1;
        } else i++;
      }
      out += '`';
      i++;
    } else if (untilBrace && c === '}' && depth === 0) {
      return { out, end: i };
    } else {
      if (c === '{') depth++;
      if (c === '}') depth--;
      out += c;
      i++;
    }
  }
  return { out, end: i };
}

function sourceFiles(dir: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  return entries.flatMap((name) => {
    const abs = join(dir, name);
    if (statSync(abs).isDirectory()) return sourceFiles(abs);
    return /\.(?:[cm]?ts|[cm]?js)$/.test(name) && !name.endsWith('.d.ts') ? [abs] : [];
  });
}
