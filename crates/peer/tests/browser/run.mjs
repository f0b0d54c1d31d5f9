// Loads a page in Debian's Chromium, headless, and prints what the page reports.
//
//   node run.mjs URL [TIMEOUT_MS]
//
// The page sets `window.__done = true` when it has finished and keeps its findings in
// `window.__results`; they are printed as one line of JSON on stdout. Page console output and
// errors go to stderr. Exits non-zero when the browser cannot be started or the page does not
// finish in time (its partial results still go to stderr).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.argv[2];
const timeoutMs = Number(process.argv[3] ?? 60000);
if (!url) {
  console.error('usage: node run.mjs URL [TIMEOUT_MS]');
  process.exit(2);
}

const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const userDataDir = mkdtempSync(join(tmpdir(), 'gotalk-chromium-'));
let context;
let status = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    // Starting Chromium took over 30 s once on a 2-core machine busy with
    // builds: the launch gets the run's whole allowance.
    timeout: timeoutMs,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  await page.goto(url, { timeout: 15000 });
  try {
    await page.waitForFunction(() => window.__done === true, null, { timeout: timeoutMs, polling: 100 });
    const results = await page.evaluate(() => window.__results);
    process.stdout.write(JSON.stringify(results) + '\n');
  } catch (e) {
    status = 1;
    const partial = await page.evaluate(() => window.__results).catch(() => null);
    console.error(`page did not finish: ${e.message}`);
    console.error(`partial results: ${JSON.stringify(partial)}`);
  }
} catch (e) {
  status = 1;
  console.error(`browser run failed: ${e.stack ?? e}`);
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(status);
