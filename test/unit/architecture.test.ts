// Reads the import lines of every file under src/ and cmd/ and fails on an edge DESIGN.md forbids.
//
// Decisions recorded here:
// - src/crds may import `node:crypto` (names.ts hashes over-long AzureAssignedIdentity names): it is
//   deterministic and does no I/O. Nothing else outside src/crds.
// - The pure cores (src/mic/core, src/nmi/core) import only themselves and src/crds: no packages (not even
//   type-only), no node: modules, no logger; their code uses no `process`, no `Date.now()` / `new Date()`,
//   no `console`.
// - Shared layers (crds, common, kube, azure) never import mic, nmi, sandbox or cmd: shared code goes down.
// - One of each (issue 12): a Backoff class lives only in src/common/backoff.ts; a clock (a type or class named
//   *Clock, a class implementing Clock, an object literal bound to *clock), `Date.now` (called or passed),
//   `new Date()` and a setTimeout sleep only in src/common/clock.ts; a Retry-After parser (a parse*RetryAfter
//   function, or code reading the retry-after header itself) only in src/common/retry-after.ts.
//   These rules cover src/sandbox too: the emulators are product code shipped here, and a test can only drive
//   their time if they read it through the same clock; they import src/common, which the layering allows.
// - No express in src/ or cmd/: NMI and MIC serve with node:http (src/common/http.ts); express is a test-only
//   dependency at most.
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

    it('rejects a second Backoff class, clock, sleep or Retry-After parser outside their modules', () => {
      expect(check('src/kube/backoff.ts', `export class Backoff {\n}\n`)).toHaveLength(1);
      expect(check('src/mic/arm.ts', `class RetryBackoff {}\n`)).toHaveLength(1);
      expect(check('src/common/backoff.ts', `export class Backoff {\n}\n`)).toEqual([]);
      expect(check('src/mic/arm.ts', `export interface ArmClock { now(): number }\n`)).toHaveLength(1);
      expect(check('src/kube/workqueue.ts', `type QueueClock = { now(): number };\n`)).toHaveLength(1);
      expect(check('src/nmi/x.ts', `class Fake implements Clock {}\n`)).toHaveLength(1);
      expect(check('src/mic/arm.ts', `const defaultClock: ArmClock = {\n  now: () => 0,\n};\n`)).toHaveLength(1);
      expect(check('src/mic/arm.ts', `import { realClock, type Clock } from '../common/clock.js';\nexport type { Clock };\n`)).toEqual([]);
      expect(check('src/common/clock.ts', `export interface Clock {}\nexport const realClock: Clock = { now: () => Date.now() };\n`)).toEqual([]);
      expect(check('src/mic/x.ts', `const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));\n`)).toHaveLength(1);
      expect(check('src/sandbox/kubelet.ts', `function sleep(ms: number): Promise<void> {\n  return p;\n}\n`)).toHaveLength(1);
      expect(check('src/kube/reflector.ts', `  async #sleep(ms: number, signal: AbortSignal): Promise<boolean> {\n    return x;\n  }\n`)).toHaveLength(1);
      expect(check('src/kube/reflector.ts', `    if (!(await this.#sleep(delay, signal))) return;\n    await clock.sleep(5);\n`)).toEqual([]);
      expect(check('src/nmi/tokens/imds.ts', `export function parseRetryAfter(v: string) {}\n`)).toHaveLength(1);
      expect(check('src/kube/errors.ts', `const raw = headers['retry-after'] ?? headers['Retry-After'];\n`)).toHaveLength(1);
      expect(check('src/mic/arm/errors.ts', `const v = get.call(headers, 'x');\nres.headers.get("Retry-After-Ms");\n`)).toHaveLength(1);
      expect(check('src/common/retry-after.ts', `export function parseRetryAfter(v: string) { return h.get('retry-after'); }\n`)).toEqual([]);
    });

    it('lets a module use the shared ones, and a server set Retry-After', () => {
      const text =
        `import { realClock, type Clock } from '../common/clock.js';\n` +
        `const clock = opts.clock ?? realClock;\nconst at = clock.now();\nawait clock.sleep(5);\n` +
        `const ms = retryAfterFromHeaders(res.headers, at);\nres.setHeader('Retry-After', '1');\n` +
        `// Date.now() would be wrong here; so would new Date()\nconst d = new Date(at);\nsetTimeout(tick, 5);\n`;
      expect(check('src/nmi/server.ts', text)).toEqual([]);
    });

    it('rejects Date.now (called or passed) and new Date() outside the clock module, sandbox included', () => {
      expect(check('src/kube/reflector.ts', `this.lastListAt = Date.now();\n`)).toHaveLength(1);
      expect(check('src/nmi/pod-index.ts', `this.now = options.nowMs ?? Date.now;\n`)).toHaveLength(1);
      expect(check('src/sandbox/cloud/arm.ts', `const started = new Date().toISOString();\n`)).toHaveLength(1);
      expect(check('cmd/mic.ts', `const t = Date . now();\n`)).toHaveLength(1);
      expect(check('test/unit/x.test.ts', `const t = Date.now();\n`)).toEqual([]);
    });

    it('rejects express in product code, wherever it is imported', () => {
      expect(check('src/nmi/server.ts', `import express, { type Request } from 'express';\n`)).toHaveLength(1);
      expect(check('cmd/nmi.ts', `const e = await import('express');\n`)).toHaveLength(1);
      expect(check('src/sandbox/apiserver/http.ts', `import type { Router } from 'express';\n`)).toHaveLength(1);
      expect(check('test/integration/x.test.ts', `import express from 'express';\n`)).toEqual([]);
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
    if (from !== 'outside') {
      for (const rule of ONE_OF_EACH_RULES) {
        if (file.path === rule.home || (rule.notInCores && (from === 'mic-core' || from === 'nmi-core'))) continue;
        if (rule.pattern.test(rule.raw ? file.text : code)) out.push(`${file.path}: ${rule.what} belongs only in ${rule.home}`);
      }
      for (const spec of importSpecifiers(file.text)) {
        if (spec === 'express' || spec.startsWith('express/')) out.push(`${file.path}: imports '${spec}': product code serves with node:http (src/common/http.ts), not express`);
      }
    }
  }
  return out;
}

/** Each shared concern has one home; a second definition elsewhere is a twin. `raw`: matched on the text with strings. */
const ONE_OF_EACH_RULES: ReadonlyArray<{
  readonly home: string;
  readonly pattern: RegExp;
  readonly what: string;
  readonly raw?: boolean;
  readonly notInCores?: boolean;
}> = [
  { home: 'src/common/backoff.ts', pattern: /\bclass\s+\w*Backoff\b/, what: 'a Backoff class' },
  { home: 'src/common/clock.ts', pattern: /\b(?:interface|class)\s+\w*Clock\b|\btype\s+\w*Clock\s*(?:<[^>]*>)?\s*=/, what: 'a clock type' },
  { home: 'src/common/clock.ts', pattern: /\bimplements\s+(?:[\w.]+\s*,\s*)*Clock\b/, what: 'a Clock implementation' },
  { home: 'src/common/clock.ts', pattern: /\b(?:const|let|var)\s+\w*[Cc]lock\s*(?::[^=;]+)?=\s*\{/, what: 'a clock object' },
  // The pure cores have their own, stricter rule for these (take `now` from the snapshot).
  { home: 'src/common/clock.ts', pattern: /\bDate\s*\.\s*now\b/, what: '`Date.now` (take a Clock; realClock.now by default)', notInCores: true },
  { home: 'src/common/clock.ts', pattern: /\bnew\s+Date\s*\(\s*\)/, what: '`new Date()` (new Date(clock.now()))', notInCores: true },
  {
    home: 'src/common/clock.ts',
    pattern: /\bnew\s+Promise\s*(?:<[^>]*>)?\s*\(\s*\(?\s*(\w+)\s*\)?\s*=>\s*\{?\s*setTimeout\s*\(\s*\1\s*,/,
    what: 'a setTimeout sleep (clock.sleep, or sleep() from the clock module)',
  },
  { home: 'src/common/clock.ts', pattern: /\bfunction\s+\w*[sS]leep\s*[(<]/, what: 'a sleep function' },
  {
    home: 'src/common/clock.ts',
    pattern: /^\s*(?:(?:private|protected|public|static|readonly)\s+)*(?:async\s+)?#?\w*[sS]leep\s*\([^)]*\)\s*:\s*Promise\s*</m,
    what: 'a sleep method (sleep(ms, signal, clock) from the clock module)',
  },
  { home: 'src/common/retry-after.ts', pattern: /\bfunction\s+parse\w*RetryAfter|\b(?:const|let|var)\s+parse\w*RetryAfter\w*\s*=/i, what: 'a Retry-After parser' },
  {
    home: 'src/common/retry-after.ts',
    pattern: /(?:\.get\s*\(\s*|\[\s*)['"`](?:x-ms-)?retry-after(?:-ms)?['"`]/i,
    what: 'reading the Retry-After header (retryAfterFromHeaders)',
    raw: true,
  },
];

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
