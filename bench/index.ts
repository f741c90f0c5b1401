// `npm run bench -- <name> [args...]`: runs bench/<name>.ts (its exported `main(args)`), e.g. `mic`, `nmi` or `federation`.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface BenchModule {
  main(args: readonly string[]): Promise<void>;
}

const NAME = /^[a-z][a-z0-9-]*$/;

async function run(): Promise<number> {
  const [name, ...args] = process.argv.slice(2);
  if (name === undefined || !NAME.test(name) || name === 'index') {
    process.stderr.write('usage: npm run bench -- <mic|nmi|federation> [args...]\n');
    return 2;
  }
  const file = fileURLToPath(new URL(`./${name}.ts`, import.meta.url));
  if (!existsSync(file)) {
    process.stderr.write(`bench: no benchmark named '${name}' (bench/${name}.ts)\n`);
    return 2;
  }
  const mod = (await import(`./${name}.ts`)) as Partial<BenchModule>;
  if (typeof mod.main !== 'function') {
    process.stderr.write(`bench: bench/${name}.ts exports no main(args)\n`);
    return 2;
  }
  await mod.main(args);
  return 0;
}

run().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
