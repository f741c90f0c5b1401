// A small command-line parser compatible with the flag forms the original Go binaries accept (Go `flag` for MIC,
// spf13/pflag for NMI), so manifests written for the original keep working: `--name=value`, `--name value`,
// `-name`, `-name=value`, booleans as `--name` or `--name=true|false`, Go durations (`3600s`, `1h30m`, `500ms`).
// Pure: it reads only the argv and env it is given.

/** The kinds of value a flag can hold. */
export type FlagKind = 'string' | 'bool' | 'int' | 'number' | 'duration' | 'seconds' | 'list';

interface FlagCommon {
  /** Name on the command line, without dashes, exactly as the original spells it (case-sensitive). */
  readonly name: string;
  readonly help: string;
  /** Environment variable read when the flag is absent from the command line. */
  readonly env?: string;
  /** Accepted for compatibility with the original's manifests and otherwise ignored. */
  readonly ignored?: boolean;
  /** The original had this flag and we do not do what it did: giving it is an error with this text (what to do instead). */
  readonly removed?: string;
}

export interface StringFlag extends FlagCommon {
  readonly kind: 'string';
  readonly default: string;
  /** Allowed values; compared after `lowercase` normalisation when set. */
  readonly choices?: readonly string[];
  /** Lower-case the value before checking `choices` (the original lower-cases `--operation-mode`). */
  readonly lowercase?: boolean;
}
export interface BoolFlag extends FlagCommon {
  readonly kind: 'bool';
  readonly default: boolean;
}
export interface IntFlag extends FlagCommon {
  readonly kind: 'int';
  readonly default: number;
  readonly min?: number;
  readonly max?: number;
}
/** A floating-point number (the original's `--clientQps` is a float64). */
export interface NumberFlag extends FlagCommon {
  readonly kind: 'number';
  readonly default: number;
  /** Require a value strictly greater than zero. */
  readonly positive?: boolean;
}
/** A Go duration; the value is in milliseconds. */
export interface DurationFlag extends FlagCommon {
  readonly kind: 'duration';
  readonly default: number;
  /** Smallest accepted value in milliseconds (default 0: negative durations are refused). */
  readonly minMs?: number;
}
/** A bare integer meaning seconds (as the original's `--find-identity-retry-interval=5`) or a Go duration; in ms. */
export interface SecondsFlag extends FlagCommon {
  readonly kind: 'seconds';
  readonly default: number;
  readonly minMs?: number;
}
/** A comma-separated list; blanks around items and empty items are dropped. */
export interface ListFlag extends FlagCommon {
  readonly kind: 'list';
  readonly default: readonly string[];
}

export type FlagDef = StringFlag | BoolFlag | IntFlag | NumberFlag | DurationFlag | SecondsFlag | ListFlag;
export type FlagDefs = Readonly<Record<string, FlagDef>>;

export type FlagValue<F extends FlagDef> = F extends BoolFlag
  ? boolean
  : F extends IntFlag | NumberFlag | DurationFlag | SecondsFlag
    ? number
    : F extends ListFlag
      ? readonly string[]
      : string;

export type FlagValues<D extends FlagDefs> = { readonly [K in keyof D]: FlagValue<D[K]> };

export interface ParsedFlags<D extends FlagDefs> {
  readonly values: FlagValues<D>;
  /** Keys of the flags set on the command line or through their environment variable. */
  readonly explicit: ReadonlySet<keyof D & string>;
  /** `-h`, `-help` or `--help` was given. */
  readonly helpRequested: boolean;
}

export type FlagResult<D extends FlagDefs> =
  | { readonly ok: true; readonly value: ParsedFlags<D> }
  | { readonly ok: false; readonly errors: readonly string[] };

/** Parse `argv` (without the node binary and script) against `defs`, falling back to `env` for absent flags. */
export function parseFlags<D extends FlagDefs>(
  defs: D,
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): FlagResult<D> {
  const byName = new Map<string, string>();
  for (const [key, def] of Object.entries(defs)) byName.set(def.name, key);

  const errors: string[] = [];
  const raw = new Map<string, unknown>();
  let helpRequested = false;

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--') {
      for (const rest of argv.slice(i + 1)) errors.push(`unexpected argument '${rest}'`);
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      errors.push(unexpectedArgument(arg, argv[i - 1], defs, byName));
      continue;
    }
    const body = arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
    const eq = body.indexOf('=');
    const name = eq === -1 ? body : body.slice(0, eq);
    const inline = eq === -1 ? undefined : body.slice(eq + 1);
    if (name === '' || name.startsWith('-')) {
      errors.push(`bad flag syntax: ${arg}`);
      continue;
    }
    const key = byName.get(name);
    if (key === undefined) {
      if (name === 'h' || name === 'help') {
        helpRequested = true;
        continue;
      }
      errors.push(unknownFlag(name, byName));
      continue;
    }
    const def = defs[key] as FlagDef;
    if (def.removed !== undefined) {
      errors.push(`${flagLabel(def)}: no longer supported: ${def.removed}`);
      if (inline === undefined && def.kind !== 'bool' && i + 1 < argv.length) i++;
      continue;
    }
    let text: string;
    if (inline !== undefined) {
      text = inline;
    } else if (def.kind === 'bool') {
      text = 'true';
    } else if (i + 1 < argv.length) {
      text = argv[++i] ?? '';
    } else {
      errors.push(`${flagLabel(def)}: flag needs an argument`);
      continue;
    }
    const parsed = parseValue(def, text);
    if (parsed.ok) raw.set(key, parsed.value);
    else errors.push(`${flagLabel(def)}: ${parsed.error}`);
  }

  for (const [key, def] of Object.entries(defs)) {
    if (raw.has(key) || def.env === undefined || def.removed !== undefined) continue;
    const fromEnv = env[def.env];
    if (fromEnv === undefined || fromEnv === '') continue;
    const parsed = parseValue(def, fromEnv);
    if (parsed.ok) raw.set(key, parsed.value);
    else errors.push(`${def.env} (environment for ${flagLabel(def)}): ${parsed.error}`);
  }

  if (errors.length > 0) return { ok: false, errors };
  const values: Record<string, unknown> = {};
  for (const [key, def] of Object.entries(defs)) values[key] = raw.has(key) ? raw.get(key) : def.default;
  return {
    ok: true,
    value: {
      values: Object.freeze(values) as FlagValues<D>,
      explicit: new Set(raw.keys()) as ReadonlySet<keyof D & string>,
      helpRequested,
    },
  };
}

/**
 * klog's logging flags (the original's binaries registered them all); accepted so manifests written for the original
 * start, and without effect: our logs are one JSON or text line per event on stderr (`--log-format`, `-v`). Logging
 * flags change no behaviour but the log's shape, so accepting them is harmless; the binaries warn once when one is set.
 */
export function klogCompatFlags() {
  return {
    logtostderr: { kind: 'bool', name: 'logtostderr', default: true, ignored: true, help: 'klog: log to standard error' },
    alsologtostderr: { kind: 'bool', name: 'alsologtostderr', default: false, ignored: true, help: 'klog: log to standard error as well as files' },
    stderrthreshold: { kind: 'string', name: 'stderrthreshold', default: '2', ignored: true, help: 'klog: logs at or above this threshold go to stderr' },
    logDir: { kind: 'string', name: 'log_dir', default: '', ignored: true, help: 'klog: log files directory' },
    logFile: { kind: 'string', name: 'log_file', default: '', ignored: true, help: 'klog: log file' },
    skipHeaders: { kind: 'bool', name: 'skip_headers', default: false, ignored: true, help: 'klog: omit header prefixes' },
    addDirHeader: { kind: 'bool', name: 'add_dir_header', default: false, ignored: true, help: 'klog: add the file directory to the header' },
    vmodule: { kind: 'string', name: 'vmodule', default: '', ignored: true, help: 'klog: per-file verbosity (pattern=N,...)' },
    logBacktraceAt: { kind: 'string', name: 'log_backtrace_at', default: ':0', ignored: true, help: 'klog: emit a stack trace at file:line' },
    logFileMaxSize: { kind: 'int', name: 'log_file_max_size', default: 1800, min: 0, ignored: true, help: 'klog: maximum log file size in MB' },
    oneOutput: { kind: 'bool', name: 'one_output', default: false, ignored: true, help: 'klog: write each entry only at its own severity' },
    skipLogHeaders: { kind: 'bool', name: 'skip_log_headers', default: false, ignored: true, help: 'klog: no headers when opening log files' },
  } as const satisfies FlagDefs;
}

/**
 * The ignored (klog) flags set on the command line or through the environment, as `--name`, for the one warning
 * the binaries log. `--logtostderr` is left out: logging to stderr is what we do anyway.
 */
export function ignoredFlagsGiven<D extends FlagDefs>(defs: D, explicit: ReadonlySet<keyof D & string>): string[] {
  return [...explicit]
    .map((key) => defs[key] as FlagDef)
    .filter((def) => def.ignored === true && def.name !== 'logtostderr')
    .map(flagLabel)
    .sort();
}

/** Check an absolute URL with one of `protocols` (e.g. `['https:']`) and return it without a trailing slash. */
export function parseBaseUrl(
  text: string,
  protocols: readonly string[],
): { ok: true; value: string } | { ok: false; error: string } {
  const expected = `expected an absolute ${protocols.map((p) => p.replace(':', '')).join(' or ')} URL`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { ok: false, error: `${expected}, got '${text}'` };
  }
  if (!protocols.includes(url.protocol)) return { ok: false, error: `${expected}, got '${text}'` };
  if (url.search !== '' || url.hash !== '') return { ok: false, error: `${expected} without query or fragment, got '${text}'` };
  return { ok: true, value: url.href.replace(/\/$/, '') };
}

/** `--name`, as flags are shown in messages and documentation. */
export function flagLabel(def: FlagDef): string {
  return `--${def.name}`;
}

/** Go-style usage text generated from the definitions. */
export function usage(program: string, defs: FlagDefs): string {
  const lines = [`Usage of ${program}:`];
  const sorted = Object.values(defs).sort((a, b) => a.name.localeCompare(b.name));
  for (const def of sorted.filter((d) => !d.ignored && d.removed === undefined)) {
    lines.push(`  ${flagLabel(def)}${typeHint(def) ? ' ' + typeHint(def) : ''}`);
    lines.push(`    \t${describe(def)}`);
  }
  const ignored = sorted.filter((d) => d.ignored).map(flagLabel);
  if (ignored.length > 0) lines.push(`Accepted for compatibility and ignored: ${ignored.join(', ')}`);
  const removed = sorted.filter((d) => d.removed !== undefined).map(flagLabel);
  if (removed.length > 0) lines.push(`The original's, refused with the reason: ${removed.join(', ')}`);
  return lines.join('\n') + '\n';
}

/** A Markdown table of the definitions, used to generate and check `docs/flags.md`. */
export function flagsMarkdownTable(defs: FlagDefs): string {
  const rows = ['| flag | type | default | environment | description |', '|---|---|---|---|---|'];
  const sorted = Object.values(defs).sort((a, b) => a.name.localeCompare(b.name));
  for (const def of sorted) {
    const help =
      def.removed !== undefined
        ? `**Refused** (the binary exits 2): ${def.removed}`
        : def.ignored
          ? `${def.help} (accepted and ignored; a warning is logged)`
          : def.help;
    const cells = [
      '`' + flagLabel(def) + '`',
      typeHint(def) || 'bool',
      def.kind === 'string' && def.default === '' ? '""' : '`' + formatDefault(def) + '`',
      def.env ? '`' + def.env + '`' : '',
      help.replace(/\|/g, '\\|'),
    ];
    rows.push(`| ${cells.join(' | ')} |`);
  }
  return rows.join('\n') + '\n';
}

/** The default value as usage text shows it (durations in Go notation). */
export function formatDefault(def: FlagDef): string {
  switch (def.kind) {
    case 'duration':
    case 'seconds':
      return formatDuration(def.default);
    case 'list':
      return def.default.join(',');
    case 'string':
      return def.default;
    default:
      return String(def.default);
  }
}

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  'µs': 1e-3, // U+00B5 micro sign
  'μs': 1e-3, // U+03BC Greek mu, as Go accepts both
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Parse a Go duration (`time.ParseDuration` syntax) into milliseconds. */
export function parseGoDuration(text: string): { ok: true; value: number } | { ok: false; error: string } {
  const bad = { ok: false as const, error: `expected a duration such as 30s, 3m, 1h30m or 500ms, got '${text}'` };
  let s = text;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s.startsWith('-')) sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return { ok: true, value: 0 };
  if (s === '') return bad;
  let total = 0;
  const part = /^(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)/;
  while (s.length > 0) {
    const m = part.exec(s);
    if (m === null) return bad;
    const whole = m[1] ?? '';
    const frac = m[2];
    if (whole === '' && (frac === undefined || frac === '')) return bad;
    const n = Number(`${whole || '0'}.${frac ?? ''}`.replace(/\.$/, ''));
    total += n * (UNIT_MS[m[3] ?? ''] ?? Number.NaN);
    s = s.slice(m[0].length);
  }
  if (!Number.isFinite(total)) return bad;
  return { ok: true, value: sign * total };
}

/** Milliseconds in Go's `Duration.String` style: `1h0m0s`, `3m0s`, `1.5s`, `500ms`, `0s`. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  const sign = ms < 0 ? '-' : '';
  let rest = Math.abs(ms);
  if (rest < 1000) return `${sign}${round(rest)}ms`;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const s = `${round(rest / 1000)}s`;
  if (h > 0) return `${sign}${h}h${m}m${s}`;
  if (m > 0) return `${sign}${m}m${s}`;
  return `${sign}${s}`;
}

function round(n: number): number {
  return Math.round(n * 1e6) / 1e6;
}

type Parsed = { ok: true; value: unknown } | { ok: false; error: string };

function parseValue(def: FlagDef, text: string): Parsed {
  switch (def.kind) {
    case 'string':
      return parseString(def, text);
    case 'bool':
      return parseBool(text);
    case 'int':
      return parseInt(def, text);
    case 'number':
      return parseNumber(def, text);
    case 'duration':
      return checkMin(parseGoDuration(text), def.minMs ?? 0, text);
    case 'seconds':
      return checkMin(
        /^[+-]?\d+$/.test(text.trim()) ? { ok: true, value: Number(text) * 1000 } : parseGoDuration(text),
        def.minMs ?? 0,
        text,
      );
    case 'list':
      return { ok: true, value: Object.freeze(text.split(',').map((x) => x.trim()).filter((x) => x !== '')) };
  }
}

function parseString(def: StringFlag, text: string): Parsed {
  const value = def.lowercase ? text.toLowerCase() : text;
  if (def.choices && !def.choices.includes(value)) {
    return { ok: false, error: `expected one of ${def.choices.join(', ')}, got '${text}'` };
  }
  return { ok: true, value };
}

// The spellings Go's strconv.ParseBool accepts.
const TRUE_WORDS = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const FALSE_WORDS = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

function parseBool(text: string): Parsed {
  if (TRUE_WORDS.has(text)) return { ok: true, value: true };
  if (FALSE_WORDS.has(text)) return { ok: true, value: false };
  return { ok: false, error: `expected true or false, got '${text}'` };
}

function parseInt(def: IntFlag, text: string): Parsed {
  const min = def.min;
  const expected =
    min !== undefined && min >= 1
      ? 'a positive integer'
      : min !== undefined && min >= 0
        ? 'a non-negative integer'
        : 'an integer';
  if (!/^[+-]?\d+$/.test(text.trim())) return { ok: false, error: `expected ${expected}, got '${text}'` };
  const n = Number(text);
  if (!Number.isSafeInteger(n)) return { ok: false, error: `expected ${expected}, got '${text}'` };
  if ((min !== undefined && n < min) || (def.max !== undefined && n > def.max)) {
    const range = def.max !== undefined ? `between ${min ?? '-∞'} and ${def.max}` : expected;
    return { ok: false, error: `expected ${range}, got '${text}'` };
  }
  return { ok: true, value: n };
}

function parseNumber(def: NumberFlag, text: string): Parsed {
  const expected = def.positive ? 'a positive number' : 'a number';
  const n = text.trim() === '' ? Number.NaN : Number(text);
  if (!Number.isFinite(n) || (def.positive && n <= 0)) return { ok: false, error: `expected ${expected}, got '${text}'` };
  return { ok: true, value: n };
}

function checkMin(parsed: { ok: true; value: number } | { ok: false; error: string }, minMs: number, text: string): Parsed {
  if (!parsed.ok) return parsed;
  if (parsed.value < minMs) {
    return { ok: false, error: `expected a duration of at least ${formatDuration(minMs)}, got '${text}'` };
  }
  return parsed;
}

function unknownFlag(name: string, byName: ReadonlyMap<string, string>): string {
  const lower = name.toLowerCase();
  const near = [...byName.keys()].find((n) => n.toLowerCase() === lower);
  return `unknown flag --${name}${near ? ` (did you mean --${near}?)` : ''}`;
}

function unexpectedArgument(
  arg: string,
  previous: string | undefined,
  defs: FlagDefs,
  byName: ReadonlyMap<string, string>,
): string {
  // `--forceNamespaced true` silently stops Go's parser; say what was meant instead.
  if (previous !== undefined && previous.startsWith('-') && !previous.includes('=')) {
    const key = byName.get(previous.replace(/^--?/, ''));
    const def = key === undefined ? undefined : defs[key];
    if (def?.kind === 'bool') {
      return `unexpected argument '${arg}' (boolean flags take their value as ${flagLabel(def)}=${arg})`;
    }
  }
  return `unexpected argument '${arg}'`;
}

function typeHint(def: FlagDef): string {
  switch (def.kind) {
    case 'bool':
      return '';
    case 'string':
      return def.choices ? def.choices.join('|') : 'string';
    case 'int':
      return 'int';
    case 'number':
      return 'number';
    case 'duration':
      return 'duration';
    case 'seconds':
      return 'seconds|duration';
    case 'list':
      return 'list';
  }
}

function describe(def: FlagDef): string {
  const parts = [def.help];
  const shown = formatDefault(def);
  if (!(def.kind === 'bool' && !def.default) && shown !== '') parts.push(`(default ${shown})`);
  if (def.env) parts.push(`(environment ${def.env})`);
  return parts.join(' ');
}
