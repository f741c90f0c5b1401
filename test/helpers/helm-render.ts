/**
 * `helm template` for our tests: no Helm binary exists on our machines, so this renders a chart with a small
 * implementation of Go's text/template and the Sprig/Helm functions charts like ours use. It follows Helm where the
 * result can differ: values coalesced over the chart's defaults (null deletes a key), the schema checked on the
 * coalesced values, missing keys read as nil and printed as "", templates run in Helm's order (deepest path first,
 * then names in reverse order), `fail`/`required` stop the render with their message.
 * Unknown functions and syntax throw, so a template this cannot render fails the test rather than passing it.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { parse as parseYaml, parseAllDocuments, stringify as stringifyYaml } from 'yaml';

export type Obj = Record<string, unknown>;
export type Lookup = (apiVersion: string, kind: string, namespace: string, name: string) => Obj | undefined;

export interface RenderOptions {
  releaseName: string;
  namespace: string;
  /** User values (as `-f`), coalesced over the chart's values.yaml. */
  values?: Obj;
  kubeVersion?: string;
  isUpgrade?: boolean;
  /** What `lookup` finds in the cluster; by default nothing, as `helm template`. */
  lookup?: Lookup;
  /** Replaces the chart's values.yaml, as `helm upgrade --reuse-values` does with the previous release's chart's. */
  chartValues?: Obj;
}

export class ChartRenderError extends Error {}

export interface RenderedChart {
  /** Rendered text per template file (files that render to nothing are left out). */
  files: Map<string, string>;
  /** Every document of every file, parsed; `kind: List` items are flattened. */
  objects: Obj[];
  values: Obj;
  notes: string;
}

export function renderChart(chartDir: string, opts: RenderOptions): RenderedChart {
  const chart = parseYaml(readFileSync(join(chartDir, 'Chart.yaml'), 'utf8')) as Obj;
  const defaults = opts.chartValues ?? ((parseYaml(readFileSync(join(chartDir, 'values.yaml'), 'utf8')) ?? {}) as Obj);
  const values = coalesceValues(defaults, opts.values ?? {});
  const schemaFile = join(chartDir, 'values.schema.json');
  if (existsSync(schemaFile)) {
    const validate = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(readFileSync(schemaFile, 'utf8')) as object);
    if (!validate(values)) throw new ChartRenderError(`values don't meet the specifications of the schema: ${JSON.stringify(validate.errors)}`);
  }
  const name = String(chart['name']);
  const engine = new Engine(opts.lookup ?? (() => undefined));
  const dir = join(chartDir, 'templates');
  const names = readdirSync(dir).filter((f) => !f.startsWith('.')).map((f) => `${name}/templates/${f}`);
  for (const n of names) engine.addFile(n, readFileSync(join(chartDir, n.slice(name.length + 1)), 'utf8'));
  const kube = opts.kubeVersion ?? 'v1.29.0';
  const [, major = '1', minor = '29'] = /^v?(\d+)\.(\d+)/.exec(kube) ?? [];
  const files = new Map<string, string>();
  let notes = '';
  // NOTES.txt is rendered too (an error there fails an install) but is no manifest.
  const order = names.filter((n) => !/\/_[^/]*$/.test(n)).sort().reverse();
  for (const file of order) {
    const top: Obj = {
      Values: values,
      Release: { Name: opts.releaseName, Namespace: opts.namespace, Service: 'Helm', IsInstall: !opts.isUpgrade, IsUpgrade: !!opts.isUpgrade, Revision: 1 },
      Chart: { Name: name, Version: chart['version'], AppVersion: chart['appVersion'], Description: chart['description'] },
      Capabilities: { KubeVersion: { Version: kube, Major: major, Minor: minor } },
      Template: { Name: file, BasePath: `${name}/templates` },
    };
    let text: string;
    try {
      text = engine.execute(file, top);
    } catch (e) {
      if (e instanceof ChartRenderError) throw new ChartRenderError(`${file}: ${e.message}`);
      throw e;
    }
    if (file.endsWith('/NOTES.txt')) notes = text;
    else if (text.trim() !== '') files.set(file.slice(name.length + 1), text);
  }
  const objects: Obj[] = [];
  for (const [file, text] of files) {
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length > 0) throw new ChartRenderError(`${file}: ${doc.errors[0]?.message}\n${text}`);
      const o = doc.toJS() as Obj | null;
      if (o === null || typeof o !== 'object') continue;
      if (o['kind'] === 'List' && Array.isArray(o['items'])) objects.push(...(o['items'] as Obj[]));
      else objects.push(o);
    }
  }
  return { files, objects, values, notes };
}

/** One template text (with the defines of `partials`) executed on `data`: for testing the renderer itself. */
export function renderTemplate(src: string, data: unknown, partials = ''): string {
  const engine = new Engine(() => undefined);
  engine.addFile('_partials.tpl', partials);
  engine.addFile('t', src);
  return engine.execute('t', data);
}

/** Helm's coalescing of user values over chart defaults: maps merge, anything else replaces, null deletes. */
export function coalesceValues(defaults: Obj, user: Obj): Obj {
  const out: Obj = structuredClone(defaults);
  for (const [k, v] of Object.entries(user)) {
    if (v === null) delete out[k];
    else if (isMap(v) && isMap(out[k])) out[k] = coalesceValues(out[k] as Obj, v);
    else out[k] = structuredClone(v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Go text/template

type Node =
  | { t: 'text'; text: string }
  | { t: 'action'; pipe: Pipe }
  | { t: 'if'; branches: { pipe: Pipe; body: Node[] }[]; otherwise: Node[] }
  | { t: 'range'; pipe: Pipe; body: Node[]; otherwise: Node[] }
  | { t: 'with'; pipe: Pipe; body: Node[]; otherwise: Node[] }
  | { t: 'template'; name: string; pipe: Pipe | null };
interface Pipe {
  decl: string[];
  assign: boolean;
  cmds: Expr[][];
}
type Expr =
  | { e: 'lit'; v: unknown }
  | { e: 'field'; base: 'dot' | string; path: string[] }
  | { e: 'fn'; name: string }
  | { e: 'paren'; pipe: Pipe; path: string[] };

type Token = { k: 'str' | 'num' | 'ident' | 'field' | 'var' | 'op'; v: string; spaced?: boolean };

class Engine {
  private readonly templates = new Map<string, Node[]>();
  constructor(private readonly lookup: Lookup) {}

  addFile(name: string, src: string) {
    this.templates.set(name, this.parse(src, name));
  }

  execute(name: string, data: unknown): string {
    const t = this.templates.get(name);
    if (!t) throw new ChartRenderError(`template: no template "${name}"`);
    const out: string[] = [];
    this.run(t, data, [new Map([['$', data]])], out);
    return out.join('');
  }

  // --- parsing
  private parse(src: string, file: string): Node[] {
    const items = lex(src);
    let i = 0;
    const parseList = (stops: string[]): { nodes: Node[]; stop: string; rest: string } => {
      const nodes: Node[] = [];
      while (i < items.length) {
        const it = items[i++]!;
        if (it.text !== undefined) {
          if (it.text) nodes.push({ t: 'text', text: it.text });
          continue;
        }
        const a = it.action!.trim();
        const kw = /^(if|range|with|define|block|end|else|template)\b\s*([\s\S]*)$/.exec(a);
        if (!kw) {
          nodes.push({ t: 'action', pipe: parsePipe(tokenize(a)) });
          continue;
        }
        const [, word, rest = ''] = kw;
        if (word === 'end' || word === 'else') {
          if (!stops.includes(word)) throw new ChartRenderError(`${file}: unexpected {{${a}}}`);
          return { nodes, stop: word, rest };
        }
        if (word === 'template') {
          const toks = tokenize(rest);
          const nameTok = toks.shift();
          if (nameTok?.k !== 'str') throw new ChartRenderError(`${file}: template needs a name`);
          nodes.push({ t: 'template', name: nameTok.v, pipe: toks.length ? parsePipe(toks) : null });
          continue;
        }
        if (word === 'define') {
          const nameTok = tokenize(rest)[0];
          if (nameTok?.k !== 'str') throw new ChartRenderError(`${file}: define needs a name`);
          const body = parseList(['end']);
          this.templates.set(nameTok.v, body.nodes);
          continue;
        }
        if (word === 'if') {
          const branches: { pipe: Pipe; body: Node[] }[] = [];
          let cond = rest;
          for (;;) {
            const body = parseList(['else', 'end']);
            branches.push({ pipe: parsePipe(tokenize(cond)), body: body.nodes });
            if (body.stop === 'end') {
              nodes.push({ t: 'if', branches, otherwise: [] });
              break;
            }
            const elseIf = /^if\b\s*([\s\S]*)$/.exec(body.rest);
            if (elseIf) {
              cond = elseIf[1] ?? '';
              continue;
            }
            const otherwise = parseList(['end']);
            nodes.push({ t: 'if', branches, otherwise: otherwise.nodes });
            break;
          }
          continue;
        }
        // range, with
        const body = parseList(['else', 'end']);
        const otherwise = body.stop === 'else' ? parseList(['end']).nodes : [];
        nodes.push({ t: word as 'range' | 'with', pipe: parsePipe(tokenize(rest)), body: body.nodes, otherwise });
      }
      if (stops.length) throw new ChartRenderError(`${file}: unexpected EOF, missing {{end}}`);
      return { nodes, stop: '', rest: '' };
    };
    return parseList([]).nodes;
  }

  // --- execution
  private run(nodes: Node[], dot: unknown, scopes: Map<string, unknown>[], out: string[]): void {
    for (const n of nodes) {
      switch (n.t) {
        case 'text':
          out.push(n.text);
          break;
        case 'action': {
          const v = this.pipe(n.pipe, dot, scopes);
          if (n.pipe.decl.length === 0) out.push(goPrint(v));
          break;
        }
        case 'template': {
          const data = n.pipe ? this.pipe(n.pipe, dot, scopes) : null;
          out.push(this.execute(n.name, data));
          break;
        }
        case 'if': {
          const inner = [...scopes, new Map()];
          const hit = n.branches.find((b) => truth(this.pipe(b.pipe, dot, inner)));
          this.run(hit ? hit.body : n.otherwise, dot, inner, out);
          break;
        }
        case 'with': {
          const inner = [...scopes, new Map()];
          const v = this.pipe(n.pipe, dot, inner);
          if (truth(v)) this.run(n.body, v, inner, out);
          else this.run(n.otherwise, dot, inner, out);
          break;
        }
        case 'range': {
          const decl = n.pipe.decl;
          const v = this.pipe({ ...n.pipe, decl: [] }, dot, scopes);
          const entries: [unknown, unknown][] = Array.isArray(v)
            ? v.map((x, i) => [i, x])
            : isMap(v)
              ? Object.keys(v).sort().map((k) => [k, v[k]])
              : v === null || v === undefined
                ? []
                : fail(`range can't iterate over ${goPrint(v)}`);
          if (entries.length === 0) this.run(n.otherwise, dot, [...scopes, new Map()], out);
          for (const [k, x] of entries) {
            const scope = new Map<string, unknown>();
            if (decl.length === 1) scope.set(decl[0]!, x);
            if (decl.length === 2) {
              scope.set(decl[0]!, k);
              scope.set(decl[1]!, x);
            }
            this.run(n.body, x, [...scopes, scope], out);
          }
          break;
        }
      }
    }
  }

  private pipe(p: Pipe, dot: unknown, scopes: Map<string, unknown>[]): unknown {
    let prev: unknown = undefined;
    let first = true;
    for (const cmd of p.cmds) {
      prev = this.command(cmd, dot, scopes, first ? [] : [prev]);
      first = false;
    }
    if (p.decl.length === 1) {
      const name = p.decl[0]!;
      if (p.assign) {
        const scope = [...scopes].reverse().find((s) => s.has(name));
        if (!scope) fail(`undefined variable: ${name}`);
        scope.set(name, prev);
      } else scopes[scopes.length - 1]!.set(name, prev);
    }
    return prev;
  }

  private command(cmd: Expr[], dot: unknown, scopes: Map<string, unknown>[], piped: unknown[]): unknown {
    const [head, ...args] = cmd;
    if (!head) fail('empty command');
    if (head.e !== 'fn') {
      if (args.length || piped.length) fail('can\'t give argument to non-function');
      return this.operand(head, dot, scopes);
    }
    const lazy = args.map((a) => () => this.operand(a, dot, scopes));
    if (head.name === 'and' || head.name === 'or') {
      const all = [...lazy, ...piped.map((v) => () => v)];
      let v: unknown;
      for (const f of all) {
        v = f();
        if (head.name === 'and' ? !truth(v) : truth(v)) return v;
      }
      return v;
    }
    return this.call(head.name, [...lazy.map((f) => f()), ...piped]);
  }

  private operand(x: Expr, dot: unknown, scopes: Map<string, unknown>[]): unknown {
    switch (x.e) {
      case 'lit':
        return x.v;
      case 'fn':
        return this.call(x.name, []);
      case 'paren':
        return fields(this.pipe(x.pipe, dot, scopes), x.path);
      case 'field': {
        let base: unknown;
        if (x.base === 'dot') base = dot;
        else {
          const scope = [...scopes].reverse().find((s) => s.has(x.base));
          if (!scope) fail(`undefined variable: ${x.base}`);
          base = scope.get(x.base);
        }
        return fields(base, x.path);
      }
    }
  }

  private call(name: string, a: unknown[]): unknown {
    const s = (i: number) => strval(a[i]);
    switch (name) {
      case 'include':
        return this.execute(s(0), a[1]);
      case 'required':
        if (a[1] === null || a[1] === undefined || a[1] === '') throw new ChartRenderError(s(0));
        return a[1];
      case 'fail':
        throw new ChartRenderError(s(0));
      case 'lookup':
        return this.lookup(s(0), s(1), s(2), s(3)) ?? {};
      case 'not':
        return !truth(a[0]);
      case 'eq':
        return a.slice(1).some((b) => a[0] === b);
      case 'ne':
        return a[0] !== a[1];
      case 'lt':
        return (a[0] as number) < (a[1] as number);
      case 'gt':
        return (a[0] as number) > (a[1] as number);
      case 'len':
        return Array.isArray(a[0]) ? a[0].length : isMap(a[0]) ? Object.keys(a[0]).length : s(0).length;
      case 'index':
        return a.slice(1).reduce((o, k) => (o === null || o === undefined ? fail('index of nil') : (o as Obj)[String(k)]), a[0]);
      case 'print':
        return a.map((v, i) => (i > 0 && typeof v !== 'string' && typeof a[i - 1] !== 'string' ? ' ' : '') + goPrint(v, true)).join('');
      case 'printf':
        return sprintf(s(0), a.slice(1));
      case 'default':
        return a.length < 2 || empty(a[1]) ? a[0] : a[1];
      case 'empty':
        return empty(a[0]);
      case 'coalesce':
        return a.find((v) => !empty(v));
      case 'ternary':
        return truth(a[2]) ? a[0] : a[1];
      case 'trunc': {
        const n = toInt(a[0]);
        return n >= 0 ? s(1).slice(0, n) : s(1).slice(n);
      }
      case 'trimSuffix':
        return s(1).endsWith(s(0)) ? s(1).slice(0, s(1).length - s(0).length) : s(1);
      case 'trimPrefix':
        return s(1).startsWith(s(0)) ? s(1).slice(s(0).length) : s(1);
      case 'trim':
        return s(0).trim();
      case 'upper':
        return s(0).toUpperCase();
      case 'lower':
        return s(0).toLowerCase();
      case 'contains':
        return s(1).includes(s(0));
      case 'hasPrefix':
        return s(1).startsWith(s(0));
      case 'hasSuffix':
        return s(1).endsWith(s(0));
      case 'replace':
        return s(2).split(s(0)).join(s(1));
      case 'regexMatch':
        return new RegExp(s(0)).test(s(1));
      case 'quote':
        return a.filter((v) => v !== null && v !== undefined).map((v) => JSON.stringify(strval(v))).join(' ');
      case 'squote':
        return a.filter((v) => v !== null && v !== undefined).map((v) => `'${strval(v)}'`).join(' ');
      case 'indent':
        return indent(toInt(a[0]), s(1));
      case 'nindent':
        return '\n' + indent(toInt(a[0]), s(1));
      case 'toYaml':
        return toYaml(a[0]);
      case 'toJson':
        return JSON.stringify(sortKeys(a[0] ?? null));
      case 'fromJson':
        try {
          const v = JSON.parse(s(0)) as unknown;
          return isMap(v) ? v : { Error: 'json: cannot unmarshal into map' };
        } catch (e) {
          return { Error: (e as Error).message };
        }
      case 'toString':
        return s(0);
      case 'int':
      case 'int64':
        return toInt(a[0]);
      case 'b64enc':
        return Buffer.from(s(0)).toString('base64');
      case 'sha256sum':
        return createHash('sha256').update(s(0)).digest('hex');
      case 'join':
        return (Array.isArray(a[1]) ? a[1] : a[1] === null || a[1] === undefined ? [] : [a[1]]).map((v) => strval(v)).join(s(0));
      case 'semverCompare':
        return semverCompare(s(0), s(1));
      case 'list':
        return [...a];
      case 'dict': {
        const d: Obj = {};
        for (let i = 0; i < a.length; i += 2) d[strval(a[i])] = a[i + 1];
        return d;
      }
      case 'get':
        return isMap(a[0]) && s(1) in a[0] ? a[0][s(1)] : '';
      case 'set':
        (a[0] as Obj)[s(1)] = a[2];
        return a[0];
      case 'hasKey':
        return isMap(a[0]) && s(1) in a[0];
      case 'has':
        return Array.isArray(a[1]) && a[1].some((v) => v === a[0]);
      case 'deepCopy':
        return structuredClone(a[0]);
      case 'dig': {
        const keys = a.slice(0, -2).map((k) => strval(k));
        let node: unknown = a[a.length - 1];
        for (const k of keys) {
          if (!isMap(node) || !(k in node)) return a[a.length - 2];
          node = node[k];
        }
        return node;
      }
      case 'kindIs':
        return kindOf(a[1]) === s(0);
      case 'kindOf':
        return kindOf(a[0]);
      default:
        return fail(`function "${name}" not defined`);
    }
  }
}

// --- lexing: text and actions, with Go's trim markers and comments
function lex(src: string): { text?: string; action?: string }[] {
  const items: { text?: string; action?: string }[] = [];
  let pos = 0;
  let trimNext = false;
  while (pos <= src.length) {
    const open = src.indexOf('{{', pos);
    let text = src.slice(pos, open === -1 ? src.length : open);
    if (trimNext) text = text.replace(/^\s+/, '');
    if (open === -1) {
      items.push({ text });
      break;
    }
    let start = open + 2;
    if (/^- /.test(src.slice(start, start + 2)) || /^-[\t\n\r]/.test(src.slice(start, start + 2))) {
      text = text.replace(/\s+$/, '');
      start += 1;
    }
    items.push({ text });
    const close = findClose(src, start);
    let end = close;
    trimNext = false;
    if (/[ \t\n\r]-$/.test(src.slice(close - 2, close))) {
      end = close - 1;
      trimNext = true;
    }
    const action = src.slice(start, end).trim();
    if (!(action.startsWith('/*') && action.endsWith('*/'))) items.push({ action });
    pos = close + 2;
  }
  return items;
}

function findClose(src: string, from: number): number {
  let i = from;
  let quote: string | null = null;
  while (i < src.length) {
    const c = src[i]!;
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === '`') quote = c;
    else if (c === '/' && src[i + 1] === '*') {
      const endComment = src.indexOf('*/', i + 2);
      if (endComment === -1) fail('unclosed comment');
      i = endComment + 1;
    } else if (c === '}' && src[i + 1] === '}') return i;
    i++;
  }
  return fail('unclosed action');
}

function tokenize(s: string): Token[] {
  const toks: Token[] = [];
  let i = 0;
  let spaced = false;
  while (i < s.length) {
    const c = s[i]!;
    if (/\s/.test(c)) {
      i++;
      spaced = true;
      continue;
    }
    const before = toks.length;
    if (c === '"') {
      let j = i + 1;
      while (j < s.length && s[j] !== '"') j += s[j] === '\\' ? 2 : 1;
      toks.push({ k: 'str', v: JSON.parse(s.slice(i, j + 1)) as string });
      i = j + 1;
      markSpacing(toks, before, spaced);
      spaced = false;
      continue;
    }
    if (c === '`') {
      const j = s.indexOf('`', i + 1);
      toks.push({ k: 'str', v: s.slice(i + 1, j) });
      i = j + 1;
      markSpacing(toks, before, spaced);
      spaced = false;
      continue;
    }
    if (s.startsWith(':=', i)) {
      toks.push({ k: 'op', v: ':=' });
      i += 2;
      spaced = false;
      continue;
    }
    if ('()|,='.includes(c)) {
      toks.push({ k: 'op', v: c });
      i++;
      spaced = false;
      continue;
    }
    const m = /^(\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*|\.(?:[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)?|-?[0-9][0-9.eE+-]*|[A-Za-z_][A-Za-z0-9_]*)/.exec(s.slice(i));
    if (!m) fail(`unexpected "${c}" in {{${s}}}`);
    const w = m[0];
    toks.push({ k: w.startsWith('$') ? 'var' : w.startsWith('.') ? 'field' : /^-?[0-9]/.test(w) ? 'num' : 'ident', v: w });
    i += w.length;
    markSpacing(toks, before, spaced);
    spaced = false;
  }
  return toks;
}

function markSpacing(toks: Token[], from: number, spaced: boolean) {
  for (let j = from; j < toks.length; j++) toks[j]!.spaced = spaced;
}

function parsePipe(toks: Token[]): Pipe {
  let i = 0;
  const decl: string[] = [];
  let assign = false;
  // $x := ..., $k, $v := ..., $x = ...
  const declEnd = toks.findIndex((t) => t.k === 'op' && (t.v === ':=' || t.v === '='));
  if (declEnd > 0 && toks.slice(0, declEnd).every((t) => t.k === 'var' || (t.k === 'op' && t.v === ','))) {
    for (const t of toks.slice(0, declEnd)) if (t.k === 'var') decl.push(t.v);
    assign = toks[declEnd]!.v === '=';
    i = declEnd + 1;
  }
  const parseCmds = (stop: string | null): Expr[][] => {
    const cmds: Expr[][] = [[]];
    while (i < toks.length) {
      const t = toks[i++]!;
      if (t.k === 'op' && t.v === ')' && stop === ')') return cmds;
      if (t.k === 'op' && t.v === '|') {
        cmds.push([]);
        continue;
      }
      const cur = cmds[cmds.length - 1]!;
      if (t.k === 'op' && t.v === '(') {
        const inner: Pipe = { decl: [], assign: false, cmds: parseCmds(')') };
        let path: string[] = [];
        const next = toks[i];
        if (next?.k === 'field' && next.v !== '.' && !next.spaced) {
          path = next.v.slice(1).split('.');
          i++;
        }
        cur.push({ e: 'paren', pipe: inner, path });
        continue;
      }
      if (t.k === 'str') cur.push({ e: 'lit', v: t.v });
      else if (t.k === 'num') cur.push({ e: 'lit', v: Number(t.v) });
      else if (t.k === 'field') cur.push({ e: 'field', base: 'dot', path: t.v === '.' ? [] : t.v.slice(1).split('.') });
      else if (t.k === 'var') {
        const [base = '$', ...path] = t.v.split('.');
        cur.push({ e: 'field', base, path });
      } else if (t.k === 'ident') {
        if (t.v === 'true' || t.v === 'false') cur.push({ e: 'lit', v: t.v === 'true' });
        else if (t.v === 'nil') cur.push({ e: 'lit', v: null });
        else cur.push({ e: 'fn', name: t.v });
      } else fail(`unexpected "${t.v}"`);
    }
    if (stop) fail('unclosed (');
    return cmds;
  };
  return { decl, assign, cmds: parseCmds(null) };
}

// --- values
function isMap(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fields(base: unknown, path: string[]): unknown {
  let v = base;
  for (const p of path) {
    if (v === null || v === undefined) fail(`nil pointer evaluating interface {}.${p}`);
    if (!isMap(v)) fail(`can't evaluate field ${p} in type ${kindOf(v)}`);
    v = v[p];
  }
  return v;
}

function truth(v: unknown): boolean {
  if (v === null || v === undefined) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v !== 0;
  if (typeof v === 'string') return v.length > 0;
  if (Array.isArray(v)) return v.length > 0;
  if (isMap(v)) return Object.keys(v).length > 0;
  return true;
}

const empty = (v: unknown) => !truth(v);

function kindOf(v: unknown): string {
  if (v === null || v === undefined) return 'invalid';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float64';
  if (Array.isArray(v)) return 'slice';
  return 'map';
}

function goPrint(v: unknown, inPrint = false): string {
  if (v === null || v === undefined) return inPrint ? '<nil>' : '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map((x) => goPrint(x, true)).join(' ')}]`;
  return `map[${Object.keys(v as Obj).sort().map((k) => `${k}:${goPrint((v as Obj)[k], true)}`).join(' ')}]`;
}

function strval(v: unknown): string {
  return v === null || v === undefined ? '<nil>' : goPrint(v, true);
}

function toInt(v: unknown): number {
  if (typeof v === 'number') return Math.trunc(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'string' && /^\s*-?\d+\s*$/.test(v)) return parseInt(v, 10);
  return 0;
}

function indent(n: number, s: string): string {
  const pad = ' '.repeat(n);
  return pad + s.split('\n').join('\n' + pad);
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (isMap(v)) return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

function toYaml(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  return stringifyYaml(sortKeys(v), { lineWidth: 0 }).replace(/\n$/, '');
}

function sprintf(format: string, args: unknown[]): string {
  let n = 0;
  return format.replace(/%([%sdvq])/g, (_m, verb: string) => {
    if (verb === '%') return '%';
    const v = args[n++];
    if (verb === 'q') return JSON.stringify(strval(v));
    if (verb === 'd') return String(toInt(v));
    return strval(v);
  });
}

function semverCompare(constraint: string, version: string): boolean {
  const m = /^\s*(>=|<=|>|<|=|!=)?\s*v?([0-9][^\s]*)\s*$/.exec(constraint);
  if (!m) return fail(`semverCompare: constraint ${constraint} is not supported`);
  const cmp = compareSemver(version, m[2]!);
  switch (m[1] ?? '=') {
    case '>=':
      return cmp >= 0;
    case '<=':
      return cmp <= 0;
    case '>':
      return cmp > 0;
    case '<':
      return cmp < 0;
    case '!=':
      return cmp !== 0;
    default:
      return cmp === 0;
  }
}

function compareSemver(a: string, b: string): number {
  const parse = (v: string) => {
    const [core = '', pre] = v.replace(/^v/, '').split(/-(.*)/s);
    const nums = core.split('.').map((x) => parseInt(x, 10) || 0);
    while (nums.length < 3) nums.push(0);
    return { nums, pre: pre ?? null };
  };
  const x = parse(a);
  const y = parse(b);
  for (let i = 0; i < 3; i++) if (x.nums[i] !== y.nums[i]) return x.nums[i]! - y.nums[i]!;
  if (x.pre === y.pre) return 0;
  if (x.pre === null) return 1;
  if (y.pre === null) return -1;
  return x.pre < y.pre ? -1 : 1;
}

function fail(message: string): never {
  throw new ChartRenderError(`template: ${message}`);
}
