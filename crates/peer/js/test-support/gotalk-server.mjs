// The real `gotalk` binary of this workspace (crates/cli), for end-to-end tests: where it is, and
// `gotalk serve` running in a child process.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const WORKSPACE = fileURLToPath(new URL('../../../../', import.meta.url));

/**
 * The `gotalk` binary: `$GOTALK_BIN`, else the newer of `target/debug/gotalk` and
 * `target/release/gotalk` (under `$CARGO_TARGET_DIR` when set). Returns `{ bin }`, or `{ missing }`
 * saying why there is none.
 */
export function findGotalk() {
  if (process.env.GOTALK_BIN) {
    const bin = path.resolve(process.env.GOTALK_BIN);
    return existsSync(bin) ? { bin } : { missing: `GOTALK_BIN=${bin} does not exist` };
  }
  const target = path.resolve(WORKSPACE, process.env.CARGO_TARGET_DIR ?? 'target');
  const exe = process.platform === 'win32' ? 'gotalk.exe' : 'gotalk';
  const found = ['debug', 'release']
    .map((profile) => path.join(target, profile, exe))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (found.length > 0) return { bin: found[0] };
  return { missing: `no gotalk binary in ${target}/{debug,release} (build it: cargo build -p gotalk-cli)` };
}

/** Throws unless `bin serve` has every option of `options` (a binary older than them is stale). */
export function checkServeOptions(bin, options) {
  const help = spawnSync(bin, ['serve', '--help'], { encoding: 'utf8', timeout: 10_000 });
  if (help.status !== 0) throw new Error(`${bin} serve --help failed: ${help.stderr || help.error}`);
  const lacking = options.filter((o) => !help.stdout.includes(o));
  if (lacking.length > 0) {
    throw new Error(`${bin} has no serve ${lacking.join(', ')}: rebuild it (cargo build -p gotalk-cli)`);
  }
}

/**
 * Runs `bin serve --addr 127.0.0.1:0 ...args` (args include `--ws HOST:PORT`) and resolves once it
 * prints its WebSocket URL: `{ url, port, stop() }`. `stop()` ends it (SIGTERM, then SIGKILL).
 */
export function startGotalk(bin, args, { timeout = 10_000 } = {}) {
  const child = spawn(bin, ['serve', '--addr', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s) => (stderr += s));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  return new Promise((resolve, reject) => {
    const fail = (why) => {
      clearTimeout(timer);
      stop().then(() => reject(new Error(`gotalk serve ${args.join(' ')}: ${why}\n${stderr}`)));
    };
    const timer = setTimeout(() => fail(`no WebSocket URL within ${timeout} ms`), timeout);
    exited.then((how) => fail(`exited (${how})`));
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^listening on (ws:\/\/[^/]+:(\d+)\/\S*)$/.exec(line);
      if (!m) return;
      clearTimeout(timer);
      resolve({ url: m[1], port: Number(m[2]), stop, stderr: () => stderr });
    });
  });
}
