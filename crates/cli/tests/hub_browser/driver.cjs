// Drives tests/hub_browser/page.html in headless Chromium for tests/hub_browser.rs, one command per
// stdin line, answering each with one stdout line:
//   wait N       -> `got N` once the page has N deliveries on its channel
//   disconnect   -> `disconnected STATE` once the page's socket is closed (it stays away)
//   reconnect    -> `reconnected COUNT` once open again; COUNT: deliveries the page had just before
//   report       -> the page's deliveries, subscribe results and close events as one JSON line
// Usage: node driver.cjs URL (NODE_PATH must find playwright-core).
const { chromium } = require('playwright-core');
const readline = require('node:readline');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const WAIT = { timeout: 20000, polling: 20 };

(async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gotalk-hub-'));
  const context = await chromium.launchPersistentContext(dataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: 60000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
    page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
    await page.goto(process.argv[2], { timeout: 15000 });
    await page.waitForFunction(() => window.hubTest?.subscribed.length === 1, null, WAIT);
    console.log('ready');
    for await (const line of readline.createInterface({ input: process.stdin })) {
      const [command, arg] = line.trim().split(' ');
      if (command === 'wait') {
        await page.waitForFunction((n) => window.hubTest.got.length >= n, Number(arg), WAIT);
        console.log(`got ${await page.evaluate(() => window.hubTest.got.length)}`);
      } else if (command === 'disconnect') {
        await page.evaluate(() => window.hubTest.disconnect());
        await page.waitForFunction(() => window.hubTest.closes.length >= 1, null, WAIT);
        console.log(`disconnected ${await page.evaluate(() => window.hubTest.conn.state)}`);
      } else if (command === 'reconnect') {
        const before = await page.evaluate(() => {
          window.hubTest.reconnect();
          return window.hubTest.got.length;
        });
        await page.waitForFunction(() => window.hubTest.conn.state === 'open', null, WAIT);
        console.log(`reconnected ${before}`);
      } else if (command === 'report') {
        const report = await page.evaluate(() => {
          const { got, subscribed, closes } = window.hubTest;
          return { got, subscribed, closes };
        });
        console.log(JSON.stringify(report));
        break;
      } else {
        throw new Error(`unknown command ${JSON.stringify(line)}`);
      }
    }
  } finally {
    await context.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
