// watchConfigFile on a real directory: every way a file gets replaced is seen, an unchanged or repeated-invalid
// file is not acted on twice, a missing file is reported once and its return is picked up.
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { watchConfigFile, type ConfigFileWatch } from '../../src/azure/cloud-config-watch.js';
import { eventually } from './mic-world.js';

let dir: string;
let watch: ConfigFileWatch | undefined;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'config-watch-'));
});
afterEach(async () => {
  watch?.close();
  await rm(dir, { recursive: true, force: true });
});

function start(path: string, initialText: string, pollIntervalMs = 60_000) {
  const valid: string[] = [];
  const invalid: string[] = [];
  watch = watchConfigFile({
    path,
    initialText,
    pollIntervalMs,
    settleMs: 10,
    parse: (text) => {
      const doc = JSON.parse(text) as { v: string };
      if (typeof doc.v !== 'string') throw new Error('v missing');
      return doc.v;
    },
    onValid: (v) => void valid.push(v),
    onInvalid: (err) => void invalid.push(err instanceof Error ? err.message : String(err)),
  });
  return { valid, invalid };
}

describe('watchConfigFile', () => {
  it('sees an in-place write and a rename over the file (editor, kubelet), each once', async () => {
    const path = join(dir, 'azure.json');
    await writeFile(path, '{"v":"1"}');
    const seen = start(path, '{"v":"1"}');
    await writeFile(path, '{"v":"2"}');
    await eventually(() => expect(seen.valid).toEqual(['2']));
    await writeFile(join(dir, '.azure.json.tmp'), '{"v":"3"}');
    await rename(join(dir, '.azure.json.tmp'), path);
    await eventually(() => expect(seen.valid).toEqual(['2', '3']));
    await watch!.check();
    expect(seen.valid).toEqual(['2', '3']);
    expect(seen.invalid).toEqual([]);
  });

  it('reports an invalid file once however often it is read, then takes the fixed one', async () => {
    const path = join(dir, 'azure.json');
    await writeFile(path, '{"v":"1"}');
    const seen = start(path, '{"v":"1"}', 20);
    await writeFile(path, '{"v":');
    await eventually(() => expect(seen.invalid).toHaveLength(1));
    for (let i = 0; i < 3; i++) await watch!.check();
    expect(seen.invalid).toHaveLength(1);
    await writeFile(path, '{"v":"fixed"}');
    await eventually(() => expect(seen.valid).toEqual(['fixed']));
  });

  it('reports a missing file once and picks it up when it comes back', async () => {
    const path = join(dir, 'azure.json');
    await writeFile(path, '{"v":"1"}');
    const seen = start(path, '{"v":"1"}', 20);
    await rm(path);
    await eventually(() => expect(seen.invalid).toEqual([expect.stringContaining('ENOENT')]));
    for (let i = 0; i < 3; i++) await watch!.check();
    expect(seen.invalid).toHaveLength(1);
    await writeFile(path, '{"v":"back"}');
    await eventually(() => expect(seen.valid).toEqual(['back']));
  });

  it('does nothing when the file is rewritten with the same text', async () => {
    const path = join(dir, 'azure.json');
    await writeFile(path, '{"v":"1"}');
    const seen = start(path, '{"v":"1"}', 20);
    await writeFile(path, '{"v":"1"}');
    for (let i = 0; i < 3; i++) await watch!.check();
    expect(seen).toEqual({ valid: [], invalid: [] });
  });
});
