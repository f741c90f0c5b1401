// Watches azure.json (`--cloudconfig`) so a rotated credential (`az aks update-credentials`, a renewed Secret)
// takes effect without a restart, as the original's fsnotify watcher did. Two triggers, because neither is enough
// alone: fs.watch on the file's *directory* (a Secret or ConfigMap volume replaces the file by swapping a `..data`
// symlink, and editors and kubelet replace files by rename, which a watch on the file itself stops seeing) and a
// periodic read (inotify is absent on some filesystems, and a watch can fail or be dropped). Either trigger only
// says "look again": the file's text is read and compared with the last text seen, so nothing is reloaded twice.
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface ConfigFileWatchOptions<T> {
  readonly path: string;
  /** Text of the file the current config was built from (what start-up read), so an unchanged file is not reloaded. */
  readonly initialText: string;
  /** Parses and validates the new text into a config; throws (with a message saying what is wrong) if invalid. */
  readonly parse: (text: string) => T;
  /** A valid new config: make it live. Errors thrown here are reported through `onInvalid` too. */
  readonly onValid: (config: T) => void | Promise<void>;
  /** The file changed but cannot be used (unreadable, or `parse` threw): the old config stays in force. */
  readonly onInvalid: (error: unknown) => void;
  /** Period of the fallback read; default 10 s. */
  readonly pollIntervalMs?: number;
  /** Wait after a directory event before reading, so a writer's several steps land as one change; default 100 ms. */
  readonly settleMs?: number;
}

export interface ConfigFileWatch {
  /** Reads the file now and applies it if it changed; resolves when done (tests, and the poll timer). */
  check(): Promise<void>;
  close(): void;
}

export function watchConfigFile<T>(opts: ConfigFileWatchOptions<T>): ConfigFileWatch {
  const dir = dirname(opts.path);
  const settleMs = opts.settleMs ?? 100;
  // The last text acted on, valid or not: an invalid file is reported once, not at every poll.
  let lastText = opts.initialText;
  let lastReadError: string | undefined;
  let closed = false;
  let watcher: FSWatcher | undefined;
  let settle: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;

  const check = async (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await checkOnce();
      } while (again && !closed);
    })().finally(() => {
      running = undefined;
    });
    return running;
  };

  const checkOnce = async (): Promise<void> => {
    let text: string;
    try {
      text = await readFile(opts.path, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      // Mid-swap the file can be missing for an instant; the next event or poll sees the new one.
      if (code !== lastReadError) {
        lastReadError = code;
        if (!closed) opts.onInvalid(new Error(`cannot read ${opts.path}: ${code}`, { cause: error }));
      }
      return;
    }
    lastReadError = undefined;
    if (text === lastText || closed) return;
    lastText = text;
    let config: T;
    try {
      config = opts.parse(text);
    } catch (error) {
      opts.onInvalid(error);
      return;
    }
    try {
      await opts.onValid(config);
    } catch (error) {
      opts.onInvalid(error);
    }
  };

  const startWatch = (): void => {
    if (watcher || closed) return;
    try {
      // Any entry of the directory: a Secret volume's swap renames `..data_tmp` to `..data`, editors rename temp
      // files; reading a small file once more is cheaper than getting the name rules right.
      watcher = watch(dir, { persistent: false }, () => {
        if (settle) clearTimeout(settle);
        settle = setTimeout(() => void check(), settleMs);
        settle.unref();
      });
      watcher.on('error', () => {
        // The directory went away or the watch broke: the poll carries on and re-arms it.
        watcher?.close();
        watcher = undefined;
      });
    } catch {
      watcher = undefined;
    }
  };

  startWatch();
  const poll = setInterval(() => {
    startWatch();
    void check();
  }, opts.pollIntervalMs ?? 10_000);
  poll.unref();

  return {
    check,
    close() {
      closed = true;
      clearInterval(poll);
      if (settle) clearTimeout(settle);
      watcher?.close();
      watcher = undefined;
    },
  };
}
